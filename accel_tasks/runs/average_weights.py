"""The weights of ``accel-tasks average`` (runs/average.py): each checkpoint read as eval-only reads it, and their mean.

Why the eval-only reader: a checkpoint directory is a plain ``save_state`` (``model.safetensors``), DeepSpeed ZeRO
shards (``pytorch_model/``, reassembled by DeepSpeed's ``zero_to_fp32``) or an FSDP2 distributed checkpoint
(``fsdp_state/``), each written by any number of processes; ``models/loading.py`` already turns every one of them
into a model (``mode=eval model.name_or_path=OUTPUT_DIR/checkpoints/step_N``), so averaging reads them the same way
and cannot disagree with what an eval of one checkpoint scores.

A full model: each checkpoint is loaded by the recipe's own ``load_model`` with ``model.name_or_path`` set to it, as
an eval-only run of that checkpoint loads it. An adapter run's checkpoint holds the adapter-wrapped model (which
eval-only refuses to read as a plain model): the run's PeftModel is rebuilt from the checkpoint's config and the
run's ``peft.*`` settings (``models/adapters.py::wrap_model``), and each checkpoint's weights are loaded into it by
the same readers (the safetensors file, ``zero_to_fp32``, ``load_sharded_weights``).

The rule is fairseq's ``scripts/average_checkpoints.py``: floating-point tensors summed in fp32 and divided by the
number of checkpoints, then cast back to their dtype; integer and bool tensors (step counters, position ids) are
the newest checkpoint's. An adapter run averages its trained weights (the adapter and its ``modules_to_save``
heads); the frozen base is the same in every checkpoint and is the newest's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from accel_tasks.config import RunConfig, build_config, load_yaml_layer
from accel_tasks.engines.fsdp import is_sharded_checkpoint, load_sharded_weights
from accel_tasks.errors import ConfigError
from accel_tasks.models.adapters import wrap_model
from accel_tasks.models.loading import (
    RUN_CONFIG_FILE,
    deepspeed_checkpoint_tag_dir,
    load_deepspeed_checkpoint_weights,
)
from accel_tasks.registry import load_recipe_class

if TYPE_CHECKING:
    import torch

    from accel_tasks.recipe_contract import Recipe

# The checkpoint file of a plain (no DeepSpeed, no FSDP2) accelerate save_state.
PLAIN_WEIGHTS = "model.safetensors"


class WeightMean:
    """The running fp32 sum of every floating-point tensor seen, by name; the mean written into the newest model."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, tensors: Mapping[str, torch.Tensor], where: str) -> None:
        """Add one checkpoint's tensors (``where`` names it in errors); integer and bool tensors are not averaged."""
        import torch

        floats = {name: value for name, value in tensors.items() if value.is_floating_point()}
        if self.count and floats.keys() != self.sums.keys():
            extra = sorted(floats.keys() ^ self.sums.keys())[:3]
            raise ConfigError(
                f"{where} holds other weights than the checkpoints before it ({extra}); average checkpoints of one "
                "run (--steps picks them)"
            )
        for name, value in floats.items():
            value = value.detach()
            total = self.sums.get(name)
            if total is None:
                self.sums[name] = value.to(device="cpu", dtype=torch.float32, copy=True)
            elif total.shape != value.shape:
                raise ConfigError(
                    f"{where}: {name} has shape {list(value.shape)}, the checkpoints before it "
                    f"{list(total.shape)}; average checkpoints of one run (--steps picks them)"
                )
            else:
                total.add_(value.to(device="cpu", dtype=torch.float32))
        self.count += 1

    def write_into(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Each averaged tensor into the newest model's own (cast back to its dtype); the rest stays the newest's."""
        import torch

        with torch.no_grad():
            for name, total in self.sums.items():
                tensors[name].copy_(total / self.count)


def unique_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the model's state dict once (a tied weight under its first name), as the model's own
    tensors: what is written into them is the model's."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            tensors[name] = tensor
    return tensors


def saved_settings(checkpoint: Path, **changes: Any) -> RunConfig:
    """The run's settings saved in ``checkpoint`` (what it decided included), with ``changes`` (group -> mapping,
    or key -> value) laid over them."""
    from omegaconf import OmegaConf

    layer = load_yaml_layer(checkpoint / RUN_CONFIG_FILE, "settings saved with the checkpoint")
    recipe_cls = load_recipe_class(str(layer.get("recipe")))
    for group in changes:
        layer.pop(group, None)
    layers = [(f"settings saved in {checkpoint}", layer)]
    if changes:
        layers.append(("accel-tasks average", OmegaConf.create(changes)))
    return build_config(recipe_cls.Options, layers)


def make_recipe(cfg: RunConfig) -> Recipe:
    return load_recipe_class(cfg.recipe)(cfg)


def average_full_models(checkpoints: list[Path]) -> tuple[torch.nn.Module, Any]:
    """The newest checkpoint's model with the mean of every checkpoint's weights, and its processor.

    Each checkpoint is loaded as ``mode=eval model.name_or_path=CHECKPOINT`` loads it (the recipe's ``load_model``
    on the run's saved settings); one model is held at a time besides the sums and the newest.
    """
    mean = WeightMean()
    model = processor = None
    for checkpoint in checkpoints:
        cfg = saved_settings(checkpoint, mode="eval", model={"name_or_path": str(checkpoint)})
        del model
        model, processor = make_recipe(cfg).load_model()
        mean.add(unique_tensors(model), str(checkpoint))
    mean.write_into(unique_tensors(model))
    return model, processor


def average_adapters(checkpoints: list[Path]) -> tuple[torch.nn.Module, Any]:
    """The run's PeftModel with the newest checkpoint's weights and the mean of every checkpoint's trained ones
    (adapter and ``modules_to_save``), and the processor saved with the newest."""
    newest = checkpoints[-1]
    model, processor = adapter_model(saved_settings(newest), newest)
    trained = {name: param for name, param in model.named_parameters() if param.requires_grad}
    mean = WeightMean()
    for checkpoint in checkpoints:
        load_adapter_checkpoint(model, checkpoint)
        mean.add(trained, str(checkpoint))
    mean.write_into(trained)
    return model, processor


def adapter_model(cfg: RunConfig, newest: Path) -> tuple[torch.nn.Module, Any]:
    """The PeftModel the run trained, its weights still to be loaded: the architecture of the checkpoint's
    config.json (the recipe's Auto class for it) wrapped by the run's ``peft.*`` settings, and the processor.

    Its ``name_or_path`` is the run's base model, so the export names the same base as the run's own export does
    (``reloadable_base``: a hub id or a directory with weights; else the base weights are written beside it).
    """
    import torch
    import transformers

    recipe = make_recipe(cfg)
    common = {"revision": cfg.model.revision, "trust_remote_code": cfg.model.trust_remote_code}
    config = transformers.AutoConfig.from_pretrained(newest, **common)
    auto_model = getattr(transformers, recipe.auto_model_class_for(config))
    with torch.random.fork_rng(devices=[]):  # overwritten by the checkpoint; the RNG is left alone
        base = auto_model.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    if (newest / "generation_config.json").is_file() and getattr(base, "generation_config", None) is not None:
        base.generation_config = transformers.GenerationConfig.from_pretrained(newest)
    processor = getattr(transformers, recipe.processor_class).from_pretrained(newest, **common)
    base.name_or_path = cfg.model.name_or_path or str(recipe.default_model_dir())
    with torch.random.fork_rng(devices=[]):
        model = wrap_model(base, cfg.peft, "train", recipe.peft_modules_to_save)
    return model, processor


def load_adapter_checkpoint(model: torch.nn.Module, checkpoint: Path) -> None:
    """An adapter run's checkpoint into ``model`` (its PeftModel), through the reader of its kind."""
    if is_sharded_checkpoint(checkpoint):
        load_sharded_weights(model, checkpoint)
        return
    if deepspeed_checkpoint_tag_dir(checkpoint) is not None:
        state = load_deepspeed_checkpoint_weights(checkpoint)
    else:
        from safetensors.torch import load_file

        state = load_file(str(checkpoint / PLAIN_WEIGHTS))
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not _tied_to_loaded(model, key, set(state))]
    if missing or result.unexpected_keys:
        raise ConfigError(
            f"{checkpoint} does not hold the weights of the run's adapter model (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}); average checkpoints written by this run's settings"
        )


def _tied_to_loaded(model: torch.nn.Module, key: str, loaded: set[str]) -> bool:
    """Whether ``key`` is a tied copy (the same tensor) of a key that was loaded: a safetensors file keeps one name
    of a tied weight."""
    state = model.state_dict(keep_vars=True)
    return any(state[other] is state[key] for other in loaded & state.keys())
