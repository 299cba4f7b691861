"""What bench/zero_memory.py and bench/fsdp_memory.py share: the probe recipe that counts a process's memory inside a
real ``accelerate launch ... -m accel_tasks.run`` training run, the model both use, and the launching.

Why one module: both benches ask the same question (what does one process hold under engine A against engine B,
same model, data and run settings), so the counting must be the same code on every side, or a ratio would compare
two ways of counting. The run is unchanged but for its recipe, ``recipe=bench/memory_probe.py:MemoryProbe``: a
subclass of the built-in SummarizationRecipe whose hooks only observe.

* ``load_model``: the live tensor storages and the RSS just before the model is built (the baseline).
* Counting points (``MEMORY_PROBE_POINTS``, comma-separated):
    micro_batch     the start of micro-batch ``MEMORY_PROBE_AT`` (default 4: with train.grad_accum=2 one optimizer
                    step is done, so Adam states exist, and micro-batch 3's gradients are accumulated);
    after_forward   after that micro-batch's forward, before its backward (what stays gathered for the backward);
    optimizer_step  just before optimizer step ``MEMORY_PROBE_STEP`` (a step pre-hook on the torch optimizer):
                    the gradients are reduced, every model state exists at once.
* At a point: every live CPU tensor storage that was not there at the baseline (gc.collect, every tensor object,
  deduplicated by data pointer; gradients, ZeRO-3 partitions and FSDP2's unsharded gradients are first given a
  Python object gc can see), each attributed to
    weights     the model's parameters: under ZeRO-3 their partitions (param.ds_tensor), under FSDP2 the local
                shards of the DTensor parameters (``to_local()``: this process's real bytes, padding included) and
                any gathered (unsharded) copies alive at that moment;
    gradients   parameters' .grad (DTensor: the local shard), FSDP2's unsharded and accumulated gradients, and
                DeepSpeed gradient partitions (attributes named *grad*);
    optimizer   the torch AdamW's states (DTensor: local shards) and its own parameters (fp32 master copies);
    buffers     every other tensor the DeepSpeed engine or optimizer, or an FSDP2 unit, holds;
    other       live tensors reachable from none of these (the batch, activations after the forward).
  model states = weights + gradients + optimizer, what the ZeRO formulas (16 / 16/N bytes per parameter) count.
* Every micro-batch's start time (``time.perf_counter``) and the seconds spent counting, so a bench can time the
  steps after its warm-up; RSS and ru_maxrss at the first micro-batch (model built and wrapped, nothing trained) and
  at each point, and ru_maxrss at exit (the whole run, export and final eval included).

Each rank writes ``rank<N>.json`` into ``MEMORY_PROBE_OUT``. Counting is CPU-only (the benches run on CPU): CUDA
tensors are not counted.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from accel_tasks.recipes.summarization import SummarizationRecipe

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "accelerate_configs"
SAMPLE_MODEL = REPO / "accel_tasks" / "samples" / "summarization" / "model"
PROBE_TARGET = "bench/memory_probe.py:MemoryProbe"
PROCESSES = 2
KINDS = ("weights", "gradients", "optimizer", "buffers", "other")
# ~60.8M parameters (tied embeddings counted once), as in the earlier version of zero_memory.py.
MODEL = dict(
    d_model=512,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=2048,
    vocab_size=32000,
    max_position_embeddings=256,
)

Claim = tuple[torch.Tensor, str, str]  # (tensor, kind, where)


# -- inside the run: counting ---------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident memory now (the baseline before the model: what the imports and the data already hold)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """ru_maxrss: the high-water mark, which catches transient peaks the counting points miss."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (the bytes this process really holds); any other tensor as it is."""
    to_local = getattr(tensor, "to_local", None)
    if to_local is None:
        return tensor
    with torch.no_grad():
        return to_local()


def storage_of(tensor: Any) -> Optional[tuple[int, int]]:
    """(data pointer, bytes) of the storage under ``tensor`` (a DTensor's local shard); None when it has none."""
    try:
        storage = local(tensor).untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, ReferenceError, TypeError):
        return None


def live_storages(extra: tuple[torch.Tensor, ...] = ()) -> dict[int, int]:
    """{data_ptr: nbytes} of every distinct non-empty CPU tensor storage reachable from Python, plus ``extra``
    (tensors that C++ holds and gc cannot list: FSDP2's unsharded gradients)."""
    gc.collect()
    storages: dict[int, int] = {}
    for obj in [*gc.get_objects(), *extra]:
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                found = storage_of(obj)
                if found and found[1]:
                    storages[found[0]] = found[1]
        except (RuntimeError, NotImplementedError, ReferenceError):
            continue
    return storages


def walk(obj: Any, path: str, out: dict[int, tuple[int, str]], seen: set[int], depth: int = 0) -> None:
    """Tensor storages held by a DeepSpeed / accelerate / torch object (an engine, an optimizer, an FSDP2 unit's
    state), with the attribute path to each; modules below the root are skipped (their parameters are counted)."""
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        found = storage_of(obj)
        if found and found[1]:
            out.setdefault(found[0], (found[1], path))
        return
    if isinstance(obj, dict):
        items = [(f"{path}[]", v) for v in obj.values()]
        items += [(f"{path}[]", k) for k in obj if isinstance(k, torch.Tensor)]
    elif isinstance(obj, (list, tuple, set)):
        items = [(f"{path}[]", v) for v in obj]
    elif isinstance(obj, torch.nn.Module) and depth > 0:
        return
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("deepspeed", "accelerate", "torch"):
        skipped = ("_modules", "_parameters", "_buffers", "module")
        items = [(f"{path}.{k}", v) for k, v in vars(obj).items() if k not in skipped]
    else:
        return
    for sub_path, value in items:
        walk(value, sub_path, out, seen, depth + 1)


def torch_optimizers(accelerator: Any) -> list[torch.optim.Optimizer]:
    """The innermost torch optimizers (the AdamW that steps): under DeepSpeed and DDP behind the optimizers accelerate
    prepared; under FSDP2 accelerate never sees the optimizer (engines/fsdp.py), so it is found among live objects."""
    from accelerate.optimizer import AcceleratedOptimizer

    wrappers = list(accelerator._optimizers) or [o for o in gc.get_objects() if isinstance(o, AcceleratedOptimizer)]
    found: list[torch.optim.Optimizer] = []
    for wrapper in wrappers:
        current, depth = wrapper, 0
        while depth < 5:
            inner = getattr(current, "optimizer", None)
            is_torch = isinstance(current, torch.optim.Optimizer) and type(current).__module__.startswith("torch.optim")
            if is_torch and not isinstance(inner, torch.optim.Optimizer):
                found.append(current)
                break
            if inner is None:
                break
            current, depth = inner, depth + 1
    return list({id(o): o for o in found}.values())


def fsdp_param_groups(model: torch.nn.Module) -> list[Any]:
    """The FSDP2 parameter group of each ``fully_shard`` unit of ``model`` (none for a model FSDP2 did not shard)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return []
    groups = []
    for module in model.modules():
        if isinstance(module, FSDPModule):
            group = module._get_fsdp_state()._fsdp_param_group
            if group is not None:
                groups.append(group)
    return groups


def model_claims(inner: torch.nn.Module) -> list[Claim]:
    """Weights and gradients of the model, with where each is held; FSDP2's gathered copies and unsharded
    gradients (held by its units, not by the DTensor parameters) included."""
    claims: list[Claim] = []
    for group in fsdp_param_groups(inner):  # first: a grad-op unit's gathered params are its module's params now
        for fsdp_param in group.fsdp_params:
            claims += fsdp_claims(fsdp_param)
    for p in inner.parameters():
        shard = " (DTensor local shard)" if hasattr(p, "to_local") else ""
        claims.append((local(p), "weights", f"param{shard}"))
        if getattr(p, "ds_tensor", None) is not None:
            claims.append((p.ds_tensor, "weights", "param.ds_tensor (ZeRO-3 partition)"))
        if p.grad is not None:
            claims.append((local(p.grad), "gradients", f"param.grad{shard}"))
    return claims


def fsdp_claims(fsdp_param: Any) -> list[Claim]:
    """One FSDP2 parameter's tensors: its local shard, the gathered copy (alive from the all-gather to the reshard)
    and the unsharded gradient that micro-batches without a reduce-scatter accumulate."""
    claims: list[Claim] = [(fsdp_param._sharded_param_data, "weights", "param (DTensor local shard)")]
    unsharded = getattr(fsdp_param, "_unsharded_param", None)
    if unsharded is not None:
        claims.append((unsharded, "weights", "FSDP2 gathered (unsharded) param"))
        if unsharded.grad is not None:
            claims.append((unsharded.grad, "gradients", "FSDP2 unsharded grad (not reduced yet)"))
    if fsdp_param.unsharded_accumulated_grad is not None:
        claims.append((fsdp_param.unsharded_accumulated_grad, "gradients", "FSDP2 unsharded accumulated grad"))
    for output in getattr(fsdp_param, "all_gather_outputs", None) or []:
        claims.append((output, "weights", "FSDP2 gathered (unsharded) param"))
    return claims


def optimizer_claims(optimizers: list[torch.optim.Optimizer]) -> list[Claim]:
    """Adam states and the optimizer's own parameters (ZeRO's fp32 master copies; under FSDP2 and DDP these are the
    model's parameters, already counted as weights)."""
    claims: list[Claim] = []
    for opt in optimizers:
        for key in opt.state:  # ZeRO-3 puts its fp32 partitions into param_groups only during step()
            if isinstance(key, torch.Tensor):
                claims.append((key, "optimizer", "optimizer params (master copy)"))
        for state in opt.state.values():
            claims += [(t, "optimizer", "adam state") for t in state.values() if isinstance(t, torch.Tensor)]
        for group in opt.param_groups:
            claims += [(t, "optimizer", "optimizer params (master copy)") for t in group["params"]]
    return claims


def engine_of(model: torch.nn.Module) -> str:
    """Which engine holds the model, for the report line."""
    from accel_tasks.engines.fsdp import is_sharded, read_fsdp_settings

    if is_sharded(model):
        return f"FSDP2 {read_fsdp_settings().sharding}"
    if hasattr(model, "zero_optimization_stage"):
        return f"DeepSpeed ZeRO-{model.zero_optimization_stage()}"
    return type(model).__name__  # DistributedDataParallel


def count_memory(model: torch.nn.Module, baseline: set[int]) -> dict[str, Any]:
    """The live tensor bytes that appeared since ``baseline``, by kind (module docstring), with the largest holders."""
    from accelerate import Accelerator

    accelerator = next(o for o in gc.get_objects() if isinstance(o, Accelerator))
    inner = getattr(model, "module", model)  # DeepSpeedEngine / DDP -> the transformers model; FSDP2: itself
    optimizers = torch_optimizers(accelerator)
    claims = model_claims(inner) + optimizer_claims(optimizers)
    live = {p: n for p, n in live_storages(tuple(t for t, _, _ in claims)).items() if p not in baseline}
    category: dict[int, tuple[str, Optional[str]]] = {}
    for tensor, kind, where in claims:
        found = storage_of(tensor)
        if found and found[0] in live:
            category.setdefault(found[0], (kind, where))
    held: dict[int, tuple[int, str]] = {}
    seen: set[int] = set()
    for opt in accelerator._optimizers or optimizers:
        walk(opt, "optimizer", held, seen)
    walk(model, "engine", held, seen)
    for index, group in enumerate(fsdp_param_groups(inner)):
        walk(group, f"fsdp_unit{index}", held, seen)
    for ptr, (_, path) in held.items():
        name = path.rsplit(".", 1)[-1].lower()
        if ptr in live:
            category.setdefault(ptr, ("gradients" if "grad" in name and "norm" not in name else "buffers", path))
    totals = dict.fromkeys(KINDS, 0)
    where: dict[str, int] = {}
    for ptr, nbytes in live.items():
        kind, path = category.get(ptr, ("other", None))
        totals[kind] += nbytes
        if path:
            where[f"{kind}: {path}"] = where.get(f"{kind}: {path}", 0) + nbytes
    return {
        "bytes": totals,
        "model_state_bytes": totals["weights"] + totals["gradients"] + totals["optimizer"],
        "live_tensor_bytes": sum(live.values()),
        "held_by_path": dict(sorted(where.items(), key=lambda kv: -kv[1])[:12]),
        "peak_rss_at_probe": peak_rss_bytes(),
        "rss_at_probe": rss_bytes(),
    }


def run_facts(model: torch.nn.Module) -> dict[str, Any]:
    """Who counted what: rank, engine, precision and the model's (global) parameter count."""
    from accelerate import Accelerator

    accelerator = next(o for o in gc.get_objects() if isinstance(o, Accelerator))
    inner = getattr(model, "module", model)
    plugin = accelerator.state.deepspeed_plugin
    return {
        "rank": accelerator.process_index,
        "processes": accelerator.num_processes,
        "distributed": accelerator.distributed_type.value,
        "engine": engine_of(model),
        "mixed_precision": accelerator.mixed_precision,
        "zero_stage": int(plugin.deepspeed_config["zero_optimization"]["stage"]) if plugin else None,
        "params": sum(getattr(p, "ds_numel", 0) or p.numel() for p in inner.parameters()),  # DTensor: global size
    }


class MemoryProbe(SummarizationRecipe):
    """The summarization recipe, counting this process's memory at the points the environment names."""

    name = "memory_probe"

    def load_model(self) -> Any:
        """The baseline is taken here, just before the model exists, so that only what the run adds is counted."""
        self._out = Path(os.environ["MEMORY_PROBE_OUT"])
        self._at = int(os.environ.get("MEMORY_PROBE_AT", "4"))
        self._step_at = int(os.environ.get("MEMORY_PROBE_STEP", "0"))
        self._points = set(os.environ.get("MEMORY_PROBE_POINTS", "micro_batch").split(","))
        self._baseline = set(live_storages())
        self._model: Optional[torch.nn.Module] = None
        self._calls, self._steps = 0, 0
        self._result: dict[str, Any] = {
            "probe_micro_batch": self._at,
            "probe_step": self._step_at,
            "baseline_rss": rss_bytes(),
            "peak_rss_before_model": peak_rss_bytes(),
            "micro_batch_starts": [],
            "probe_seconds": [],
            "points": {},
        }
        atexit.register(self._at_exit)
        return super().load_model()

    def training_loss(self, model: Any, batch: Any) -> torch.Tensor:
        """Once per micro-batch, with the engine's model: the clock, and the counting points around the forward."""
        self._result["micro_batch_starts"].append(time.perf_counter())
        self._calls += 1
        if self._model is None:
            self._model = model
            self._result.update(run_facts(model), peak_rss_at_start=peak_rss_bytes(), rss_at_start=rss_bytes())
            if "optimizer_step" in self._points:
                self._hook_optimizer_step()
        if self._calls == self._at and "micro_batch" in self._points:
            self._measure("micro_batch")
        loss = super().training_loss(model, batch)
        if self._calls == self._at and "after_forward" in self._points:
            self._measure("after_forward")
        return loss

    def _hook_optimizer_step(self) -> None:
        """No recipe hook runs between the gradient reduction and the step, so a pre-hook on the torch optimizer."""
        from accelerate import Accelerator

        accelerator = next(o for o in gc.get_objects() if isinstance(o, Accelerator))

        def before_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
            self._steps += 1
            if self._steps == self._step_at:
                self._measure("optimizer_step")

        for opt in torch_optimizers(accelerator):
            opt.register_step_pre_hook(before_step)

    def _measure(self, point: str) -> None:
        """Count at ``point``, and time the counting so a bench can keep it out of its step times."""
        started = time.perf_counter()
        with warnings.catch_warnings():  # gc.get_objects touches deprecated torch.distributed attributes
            warnings.simplefilter("ignore")
            self._result["points"][point] = count_memory(self._model, self._baseline)
        self._result["probe_seconds"].append([self._calls, time.perf_counter() - started])
        self._write()

    def _write(self) -> None:
        self._out.mkdir(parents=True, exist_ok=True)
        (self._out / f"rank{self._result['rank']}.json").write_text(json.dumps(self._result, indent=1))

    def _at_exit(self) -> None:
        if "rank" in self._result:
            self._result["peak_rss_run"] = peak_rss_bytes()
            self._write()


# -- outside the run: the model, the settings, the launches -------------------------------------------------------


def build_model_dir(path: Path, sizes: dict[str, int]) -> Path:
    """A BART config (no weights: accel_tasks builds it with random weights) and the bundled sample's tokenizer."""
    from transformers import BartConfig

    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SAMPLE_MODEL / name, path / name)
    config = BartConfig(
        **sizes,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        decoder_start_token_id=1,
        forced_bos_token_id=None,
        forced_eos_token_id=1,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    config.save_pretrained(path)
    return path


def run_settings(steps: int) -> list[str]:
    """The key=value overrides every side gets (a plugin recipe does not inherit the built-in preset)."""
    return [
        f"train.max_steps={steps}",
        "train.batch_size=1",
        "train.grad_accum=2",
        "train.log_every=1",
        "data.max_train_samples=64",
        "data.max_eval_samples=2",
        "eval.batch_size=2",
        "task.max_source_length=16",
        "task.max_target_length=8",
        "generation.num_beams=1",
        "generation.max_new_tokens=4",
        "seed=0",
    ]


@dataclass(frozen=True)
class Side:
    """One side of a comparison: its name and the launcher arguments (an accelerate config and flags on top)."""

    name: str
    launcher: tuple[str, ...]


def command_for(side: Side, run_args: list[str], out: Path) -> list[str]:
    """The whole ``accelerate launch ... -m accel_tasks.run`` command of one side."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *side.launcher,
        "-m",
        "accel_tasks.run",
        f"recipe={PROBE_TARGET}",
        *run_args,
        f"output_dir={out / 'run'}",
    ]


def shown(command: list[str], tmp: Path) -> str:
    """A command as a reader would type it: ``accelerate launch``, paths relative to the repo, <tmp> for the
    bench's temporary directory."""
    text = " ".join(command[3:]).replace(str(tmp), "<tmp>").replace(str(REPO) + "/", "")
    return "accelerate launch " + text


def launch(side: Side, run_args: list[str], out: Path, probe_env: dict[str, str]) -> tuple[list[dict], float]:
    """One run of ``side``: every rank's probe result and the wall seconds of the whole command."""
    env = dict(os.environ, MEMORY_PROBE_OUT=str(out / "probe"), PYTHONUNBUFFERED="1", **probe_env)
    started = time.perf_counter()
    command = command_for(side, run_args, out)
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)
    seconds = time.perf_counter() - started
    files = sorted((out / "probe").glob("rank*.json"))
    if completed.returncode != 0 or len(files) != PROCESSES:
        sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-6000:])
        raise SystemExit(f"{side.name}: run failed with exit {completed.returncode} ({len(files)} probe files)")
    ranks = [json.loads(f.read_text()) for f in files]
    if any("peak_rss_run" not in r for r in ranks):
        raise SystemExit(f"{side.name}: a rank did not record its end-of-run peak")
    return ranks, seconds


def run_pairs(
    sides: list[Side], pairs: int, run_args: list[str], root: Path, probe_env: dict[str, str]
) -> list[dict[str, Any]]:
    """``pairs`` rounds of every side, the order reversed every other round (pair 1 the first side first, pair 2 the
    last side first, ...); each round is {side name: ranks, "order": [...]}."""
    rounds: list[dict[str, Any]] = []
    for index in range(pairs):
        order = sides if index % 2 == 0 else sides[::-1]
        done: dict[str, Any] = {"order": [s.name for s in order]}
        for side in order:
            ranks, seconds = launch(side, run_args, root / f"pair{index + 1}" / side.name, probe_env)
            done[side.name] = ranks
            print(f"# pair {index + 1}: {side.name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
        rounds.append(done)
    return rounds


def point_value(rank: dict[str, Any], point: str, key: str) -> float:
    """A figure of one rank: ``key`` at a counting point ("bytes.<kind>" for one kind), or a whole-run figure."""
    if key == "peak_rss_increase":
        return rank["peak_rss_run"] - rank["baseline_rss"]
    if point == "run":
        return rank[key]
    figures = rank["points"][point]
    if key.startswith("bytes."):
        return figures["bytes"][key.split(".", 1)[1]]
    return figures[key]


def worst(ranks: list[dict[str, Any]], point: str, key: str) -> float:
    """The largest value over the ranks of one run (a process is as large as its largest rank)."""
    return max(point_value(r, point, key) for r in ranks)


def ratio_line(
    label: str,
    rounds: list[dict[str, Any]],
    sides: tuple[str, str],
    values: Callable[[list[dict[str, Any]]], float],
    width: int = 34,
) -> str:
    """Per-pair ratios side A / side B of ``values(ranks)`` and their median, with which of the two ran first."""
    import statistics

    ratios = [values(r[sides[0]]) / values(r[sides[1]]) for r in rounds]
    firsts = [next(name for name in r["order"] if name in sides) for r in rounds]
    return (
        f"{label:<{width}} pairs "
        + ", ".join(f"{x:.3f} ({first} first)" for x, first in zip(ratios, firsts))
        + f"; median {statistics.median(ratios):.3f}"
    )
