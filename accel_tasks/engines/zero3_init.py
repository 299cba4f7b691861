"""Loading a saved model under DeepSpeed ZeRO-3 (``zero.Init``): what the weights lack is initialised with the
parameters its init reads gathered, so models that compute weights in their init (Marian, Whisper) load already
sharded on any number of processes. ``models/loading.py`` enters :func:`zero3_loading` around every load path.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


@contextmanager
def zero3_loading() -> Iterator[None]:
    """Loading a saved model under ZeRO-3 (``zero.Init``) initialises what the weights lack with every parameter
    that init can read gathered, so models that compute weights in ``_init_weights`` load on any number of processes.

    Why: transformers 5's ``_initialize_missing_keys`` gathers only the parameters missing from the loaded state
    dict, yet calls ``_init_weights`` on every module. A model that computes a weight from a parameter's shape there
    (Marian's sinusoidal ``create_weight``, Whisper's ``sinusoids(*embed_positions.weight.shape)``) then reads the
    shape of a loaded, still partitioned parameter (empty, 1-D) and fails on every rank; ``init.copy_`` would skip
    the loaded value, but its argument is computed first. A tiny BART loads because its init only draws.
    Inside this context, that step walks the modules as transformers' own ZeRO-3 ``from_config`` init does: each
    module whose init still runs has its own and its direct children's parameters gathered (one module at a time,
    never the whole model), every rank runs it (buffers it computes stay equal on all ranks), rank 0's values are
    kept, and loaded parameters keep their loaded values (their ``_is_hf_initialized`` flag makes the init skip them).
    Loading full weights without ``zero.Init`` and letting ``deepspeed.initialize`` partition them would avoid the
    step too, but DeepSpeed then moves the whole model onto each device first (engine ``.to(device)`` for a model
    not built under ``zero.Init``) and every process holds it whole in RAM: the memory ZeRO-3 exists to save.
    Outside ZeRO-3 (and for quantized models) nothing changes.
    """
    from transformers import PreTrainedModel
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    original = PreTrainedModel.__dict__.get("_initialize_missing_keys")
    if original is None or not is_deepspeed_zero3_enabled():
        yield
        return

    def initialize_missing_keys(model: PreTrainedModel, is_quantized: bool) -> None:
        if is_quantized or not is_deepspeed_zero3_enabled():
            return original(model, is_quantized)
        initialize_gathered(model)

    PreTrainedModel._initialize_missing_keys = initialize_missing_keys
    try:
        yield
    finally:
        PreTrainedModel._initialize_missing_keys = original


def initialize_gathered(model: PreTrainedModel) -> None:
    """``model.initialize_weights()`` on a ZeRO-3 partitioned model, module by module with the parameters its init
    can read gathered (:func:`zero3_loading`); modules already initialised are neither gathered nor visited again."""
    import deepspeed
    import torch
    from transformers import PreTrainedModel
    from transformers.initialization import guard_torch_init_functions

    custom_code = model.is_custom_code()

    def visit(module: torch.nn.Module, init: Callable[[torch.nn.Module, bool], None]) -> None:
        for child in module.children():  # a submodel (Whisper's encoder) brings its own _init_weights
            visit(child, child._initialize_weights if isinstance(child, PreTrainedModel) else init)
        if getattr(module, "_is_hf_initialized", False):
            return
        params = list(module.parameters(recurse=False))
        for child in module.children():
            if not isinstance(child, PreTrainedModel):
                params.extend(child.parameters(recurse=False))
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            init(module, custom_code)

    with torch.no_grad(), guard_torch_init_functions():
        visit(model, model._initialize_weights)
