"""LoRA versus full fine-tuning on the same model and data: peak memory, step time and checkpoint size.

Each variant runs the real loop (``accel_tasks.loop.run``) in its own fresh process, so peak memory is
per variant. The model is the recipe's bundled tiny config scaled up (``--d-model``, ``--layers``,
``--ffn``) so weights, gradients and optimizer states dominate memory, as they do for real models.

    OMP_NUM_THREADS=1 python bench/lora_vs_full.py                       # summarization, 512-d Marian
    python bench/lora_vs_full.py --steps 20 --d-model 768 --layers 6 -- train.batch_size=16

Printed side by side: peak memory (CUDA: max allocated; CPU: peak RSS and its rise over the RSS
before the model was loaded), median step time, training-checkpoint size and exported-model size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
PARAMS_LINE = re.compile(r"trainable / total parameters: ([\d,]+) / ([\d,]+)")
MARKER = "BENCH_RESULT "


def scaled_model_dir(source: Path, dest: Path, d_model: int, layers: int, ffn: int, heads: int) -> Path:
    """A copy of a bundled model dir (tokenizer + config) with a bigger Marian/BART-style config."""
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_ffn_dim=ffn,
                  decoder_ffn_dim=ffn, encoder_attention_heads=heads, decoder_attention_heads=heads)
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def dir_size(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file()) if path.exists() else 0


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


def child(overrides: list[str]) -> None:
    """One variant, in this process: pre-import the heavy stack, note RSS, run the loop, report peaks."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from accel_tasks.loop import run
    from accel_tasks.preflight import make_plan
    from accel_tasks.run import resolve_config

    from accel_tasks import loop

    # One timestamp per micro-batch, taken where the loop accounts for it (after backward and step).
    stamps: list[float] = []
    original_add = loop.ThroughputMeter.add

    def timed_add(self: Any, *args: Any, **kwargs: Any) -> None:
        stamps.append(time.perf_counter())
        original_add(self, *args, **kwargs)

    loop.ThroughputMeter.add = timed_add
    # The high-water mark after the training steps, before the first checkpoint save or the export
    # (serialising weights has its own peak, the same for both variants).
    train_peak: list[int] = []

    def marked(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            train_peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            return function(*args, **kwargs)

        return wrapper

    loop.save_checkpoint = marked(loop.save_checkpoint)
    loop.export_model = marked(loop.export_model)
    cfg, recipe_cls = resolve_config(overrides, None)
    plan = make_plan(cfg, recipe_cls)  # loads the metric modules too, before the baseline
    baseline = current_rss_bytes()
    start = time.perf_counter()
    run(plan)
    result = {
        "wall_s": time.perf_counter() - start,
        "rss_baseline_bytes": baseline,
        "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_train_peak_bytes": train_peak[0] if train_peak else None,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "step_times_s": [b - a for a, b in zip(stamps, stamps[1:])],
    }
    print(MARKER + json.dumps(result), flush=True)


def run_variant(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--", *overrides, f"output_dir={out}"]
    print(f"[bench] {name}: {' '.join(command[3:])}", flush=True)
    # glibc keeps freed medium-size blocks in its heap, so RSS would track the allocator's high-water mark
    # rather than live tensors (measured: LoRA then looked as big as full fine-tuning); mmap them instead.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"[bench] {name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith(MARKER))
    result = json.loads(line[len(MARKER):])
    # Skip the first steps (allocation, warm-up); the median ignores a step that includes a checkpoint save.
    times = result["step_times_s"][2:]
    result["step_s"] = statistics.median(times) if times else float("nan")
    params = PARAMS_LINE.search(proc.stdout)
    result["trainable"], result["total"] = (int(params.group(i).replace(",", "")) for i in (1, 2)) if params else (0, 0)
    checkpoints = sorted((out / "checkpoints").glob("step_*"))
    result["checkpoint_bytes"] = dir_size(checkpoints[-1]) if checkpoints else 0
    model = out / "model"
    result["export_weights_bytes"] = dir_size(model, "adapter_model.safetensors") or dir_size(model, "model*.safetensors")
    result["export_dir_bytes"] = dir_size(model)
    return result


def fmt_bytes(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f} MiB"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "-" if not a or not b else f"{a / b:.3f}"


def report(full: dict, lora: dict) -> None:
    rows = []
    if full.get("cuda_peak_bytes"):
        rows.append(("peak CUDA memory (max allocated)", full["cuda_peak_bytes"], lora["cuda_peak_bytes"], fmt_bytes))
    rows += [
        ("trainable parameters", full["trainable"], lora["trainable"], lambda n: f"{n:,}"),
        ("peak RSS, whole run", full["rss_peak_bytes"], lora["rss_peak_bytes"], fmt_bytes),
        ("peak RSS, until the first save", full["rss_train_peak_bytes"], lora["rss_train_peak_bytes"], fmt_bytes),
        ("  same, above pre-model baseline", full["rss_train_peak_bytes"] - full["rss_baseline_bytes"],
         lora["rss_train_peak_bytes"] - lora["rss_baseline_bytes"], fmt_bytes),
        ("median step time", full["step_s"], lora["step_s"], lambda s: f"{s * 1000:,.1f} ms"),
        ("training checkpoint (dir)", full["checkpoint_bytes"], lora["checkpoint_bytes"], fmt_bytes),
        ("exported weights (model vs adapter)", full["export_weights_bytes"], lora["export_weights_bytes"], fmt_bytes),
        ("exported model/ dir", full["export_dir_bytes"], lora["export_dir_bytes"], fmt_bytes),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':<{width}}  {'full':>14}  {'lora':>14}  {'lora/full':>9}")
    for label, a, b, show in rows:
        print(f"{label:<{width}}  {show(a):>14}  {show(b):>14}  {ratio(b, a):>9}")
    print(f"total parameters: {full['total']:,} (full) / {lora['total']:,} (lora, adapter included)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="summarization")
    parser.add_argument("--model-dir", type=Path, help="model dir to scale (default: the recipe's bundled model)")
    parser.add_argument("--no-scale", action="store_true", help="use --model-dir as it is")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--ffn", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("overrides", nargs="*", help="extra key=value settings for both variants (after --)")
    args = parser.parse_args(argv)
    if args.child:
        child(args.overrides)
        return 0

    from accel_tasks.registry import load_recipe_class

    recipe_cls = load_recipe_class(args.recipe)
    source = args.model_dir or (recipe_cls.sample_dir / "model" if recipe_cls.sample_dir else None)
    if source is None or not (Path(source) / "config.json").is_file():
        sys.exit(f"[bench] no model dir: pass --model-dir (the bundled {source} is missing; build it with scripts/build_samples.py)")
    work = Path(tempfile.mkdtemp(prefix="lora_vs_full_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(source) if args.no_scale else scaled_model_dir(Path(source), work / "bench_model", args.d_model, args.layers, args.ffn, args.heads)
    common = [
        f"recipe={args.recipe}", f"model.name_or_path={model_dir}", f"train.max_steps={args.steps}",
        f"train.save_every={args.steps}", f"train.batch_size={args.batch_size}", "train.log_every=1",
        "train.overwrite_output_dir=true", "data.max_eval_samples=8", "eval.batch_size=8",
        "generation.num_beams=1", "generation.max_new_tokens=8", f"data.max_train_samples={args.steps * args.batch_size}",
        *args.overrides,
    ]
    full = run_variant("full", common, work / "full")
    lora = run_variant("lora", [*common, "peft.method=lora", f"peft.r={args.r}"], work / "lora")
    print(f"[bench] model {model_dir} ({args.d_model}-d, {args.layers}+{args.layers} layers), {args.steps} steps of batch {args.batch_size}, LoRA r={args.r}")
    report(full, lora)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
