"""Training throughput (tokens/s) and model FLOPs utilisation (MFU) of t5-small- and bart-base-sized models.

The models are built from configs with the published sizes, random weights, nothing downloaded:
``t5-small`` (T5Config: d_model 512, d_ff 2048, 6+6 layers, 8 heads of 64, vocab 32,128, 60.5M parameters) and
``bart-base`` (BartConfig: d_model 768, ffn 3072, 6+6 layers, 12 heads, vocab 50,265, 139.4M parameters).
Each is trained for ``--steps`` timed steps after ``--warmup`` steps on fixed-shape random token batches
(``--batch-size`` x ``--source-len`` source tokens, ``--target-len`` label tokens), with the GPU path of the
training loop, from ``accel_tasks.engines.performance``: AdamW fused on CUDA, TF32 matmuls on CUDA, SDPA attention,
optional ``--compile`` (torch.compile of the training forward, as train.compile=true), bf16 autocast on CUDA
(``--dtype``, as ``accelerate launch --mixed_precision bf16``).

Model FLOPs per step are counted once by ``torch.utils.flop_counter.FlopCounterMode`` on a real forward and
backward of the same batch (with eager attention, whose matmuls it counts on every device; no recompute is
included: these are model FLOPs, not hardware FLOPs) and printed beside the 6 x parameters x tokens rule of
thumb (which over-counts an encoder-decoder about twice: it charges every parameter for every token, embeddings
included).
MFU = FLOPs per step / seconds per step / peak, with the device's dense bf16 peak from the table below (matched on
``torch.cuda.get_device_name()``) or ``--peak-tflops``. On a CPU the script runs too, with smaller defaults, and
prints tokens/s; MFU only with ``--peak-tflops`` (there is no table of CPU peaks).

    python bench/gpu_throughput.py                               # both models, defaults for the device found
    python bench/gpu_throughput.py --models t5-small --batch-size 64 --source-len 512 --target-len 128 --compile
    OMP_NUM_THREADS=1 python bench/gpu_throughput.py --threads 1   # CPU smoke run (tokens/s only)
    python bench/gpu_throughput.py --peak-tflops 989.4           # a device the table does not know

Last line: ``throughput: MODEL tokens_per_s=X mfu=Y ...`` per model (mfu=n/a without a peak).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS from the vendors' data sheets, matched in this order as whole
# words of the device name torch reports (more specific names first: "H100 PCIe" before "H100").
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),  # not the A10G (no published figure): names match as whole words
    ("MI300X", 1307.4),
    ("MI250X", 383.0),
)

MODELS = {
    "t5-small": (
        "t5",
        dict(
            d_model=512,
            d_ff=2048,
            d_kv=64,
            num_layers=6,
            num_decoder_layers=6,
            num_heads=8,
            vocab_size=32128,
            relative_attention_num_buckets=32,
            feed_forward_proj="relu",
            dropout_rate=0.1,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ),
    ),
    "bart-base": (
        "bart",
        dict(
            d_model=768,
            encoder_ffn_dim=3072,
            decoder_ffn_dim=3072,
            encoder_layers=6,
            decoder_layers=6,
            encoder_attention_heads=12,
            decoder_attention_heads=12,
            vocab_size=50265,
            max_position_embeddings=1024,
            dropout=0.1,
            attention_dropout=0.1,
            activation_dropout=0.1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
        ),
    ),
}


def peak_tflops(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a GPU by its name, or None for a device the table does not list."""
    for key, value in BF16_PEAK_TFLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name, flags=re.IGNORECASE):
            return value
    return None


def build_model(name: str, attention: Optional[str]):
    import transformers

    from accel_tasks.engines.performance import attention_kwargs

    model_type, sizes = MODELS[name]
    config = transformers.AutoConfig.for_model(model_type, **sizes)
    return transformers.AutoModelForSeq2SeqLM.from_config(config, **attention_kwargs(attention))


def batch_for(model: Any, batch_size: int, source_len: int, target_len: int, device: Any, seed: int = 0) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    input_ids = torch.randint(4, vocab, (batch_size, source_len), generator=generator)
    labels = torch.randint(4, vocab, (batch_size, target_len), generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "labels": labels.to(device),
    }


def count_flops(name: str, batch: dict, device: Any, dtype: Any) -> int:
    """Forward + backward FLOPs of one step, counted on a model with eager attention (the same math as SDPA)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, "eager").to(device)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
    del model
    return int(counter.get_total_flops())


def run_model(name: str, args: argparse.Namespace, device: Any, peak: Optional[float]) -> dict:
    import torch

    from accel_tasks.config import TrainConfig
    from accel_tasks.engines.performance import attention_in_use, build_adamw, compile_for_training, fused_adamw

    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    torch.manual_seed(0)
    model = build_model(name, args.attention).to(device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    fused = fused_adamw(device.type) and not args.no_fused
    optimizer = build_adamw(
        [{"params": list(model.parameters()), "weight_decay": 0.01}],
        TrainConfig(lr=1e-4),
        device.type if fused else "cpu",
    )
    forward = compile_for_training(model, {"backend": "inductor"} if args.compile else None)
    batch = batch_for(model, args.batch_size, args.source_len, args.target_len, device)
    tokens = args.batch_size * (args.source_len + args.target_len)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    compile_start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - compile_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    attention = attention_in_use(model)
    flops = count_flops(name, batch, device, dtype)
    achieved = flops / step_s / 1e12
    return {
        "model": name,
        "params": params,
        "tokens_per_step": tokens,
        "step_s": step_s,
        "warmup_s": warmup_s,
        "tokens_per_s": tokens / step_s,
        "flops_per_step": flops,
        "estimate_6nt": 6 * params * tokens,
        "tflops": achieved,
        "mfu": achieved / peak if peak else None,
        "memory_gib": memory,
        "attention": attention,
        "fused": fused,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="t5-small,bart-base", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--device", default=None, help="cuda, cpu, ...; default: cuda when available")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 on CUDA, 4 on CPU")
    parser.add_argument("--source-len", type=int, default=None, help="default 512 on CUDA, 128 on CPU")
    parser.add_argument("--target-len", type=int, default=None, help="default 128 on CUDA, 32 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 20 on CUDA, 3 on CPU")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (compiles under --compile); default 5 / 1"
    )
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp32"),
        default=None,
        help="bf16 autocast (default on CUDA) or fp32 (default on CPU)",
    )
    parser.add_argument("--attention", default=None, help="model.attn_implementation; default: sdpa where supported")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the training forward (train.compile=true)"
    )
    parser.add_argument("--no-fused", action="store_true", help="plain AdamW even on CUDA")
    parser.add_argument("--no-tf32", action="store_true", help="full fp32 matmuls on CUDA")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak for MFU (wins over the table)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (CPU); default ACCEL_TASKS_NUM_THREADS or torch's"
    )
    args = parser.parse_args()

    import torch

    from accel_tasks.engines.performance import set_tf32

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    defaults = {
        "batch_size": (32, 4),
        "source_len": (512, 128),
        "target_len": (128, 32),
        "steps": (20, 3),
        "warmup": (5, 1),
    }
    for key, (gpu, cpu) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, gpu if on_gpu else cpu)
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    threads = args.threads or int(os.environ.get("ACCEL_TASKS_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    tf32 = set_tf32(device.type, not args.no_tf32)
    device_name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops if args.peak_tflops is not None else (peak_tflops(device_name) if on_gpu else None)
    if on_gpu and args.dtype == "bf16" and not torch.cuda.is_bf16_supported():
        print(f"{device_name} has no bf16: use --dtype fp32 (and --peak-tflops for its fp32 peak)")
        return 2
    print(
        f"device: {device_name}; torch {torch.__version__}; dtype {args.dtype}; TF32 {'on' if tf32 else 'off'}; "
        f"peak {f'{peak:g} TFLOPS (dense bf16)' if peak else 'unknown (no MFU; --peak-tflops sets one)'}; "
        f"batch {args.batch_size} x ({args.source_len} source + {args.target_len} target tokens); "
        f"{args.warmup} warm-up + {args.steps} timed steps{'; torch.compile' if args.compile else ''}"
    )
    if on_gpu and peak is None and args.peak_tflops is None:
        print(f"  {device_name!r} is not in the peak table; MFU is not computed")
    results = [run_model(name.strip(), args, device, peak) for name in args.models.split(",") if name.strip()]
    print(
        f"{'model':<10}{'params':>9}{'attention':>10}{'AdamW':>7}{'step ms':>9}{'tokens/s':>11}{'TFLOPS':>8}{'MFU':>7}"
        f"{'GFLOP/step':>12}{'6NT GFLOP':>11}{'warm-up s':>10}{'peak GiB':>9}"
    )
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        memory = f"{r['memory_gib']:.2f}" if r["memory_gib"] is not None else "-"
        print(
            f"{r['model']:<10}{r['params'] / 1e6:>8.1f}M{r['attention']:>10}{'fused' if r['fused'] else 'plain':>7}"
            f"{1000 * r['step_s']:>9.1f}{r['tokens_per_s']:>11.0f}{r['tflops']:>8.3f}{mfu:>7}"
            f"{r['flops_per_step'] / 1e9:>12.1f}{r['estimate_6nt'] / 1e9:>11.1f}{r['warmup_s']:>10.1f}{memory:>9}"
        )
    summary = []
    for r in results:
        mfu = f"{r['mfu']:.4f}" if r["mfu"] is not None else "n/a"
        summary.append(f"{r['model']} tokens_per_s={r['tokens_per_s']:.0f} mfu={mfu}")
    print("throughput: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
