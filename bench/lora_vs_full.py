"""LoRA versus full fine-tuning on the same model and data: peak memory, step time and checkpoint size.

Each variant runs the real loop (``accel_tasks.training.loop.run``) in its own fresh process, so peak memory is
per variant. The two run in ``--pairs`` pairs (default 3), the order alternating (pair 1 full first,
pair 2 LoRA first, ...), with the same seed, data and batches (one run config, the LoRA settings added);
each pair's lora/full ratios and the median over pairs are printed. The model is the recipe's bundled
tiny config scaled up (``--d-model``, ``--layers``, ``--ffn``, ``--heads``) so weights, gradients and
optimizer states dominate memory, as they do for real models.

Default size: a 256-d Marian, 6+6 layers, ffn 1024, 4 heads (11.5M parameters). It was 512-d / ffn
2048 / 8 heads (45M parameters), but one such variant takes about 50 s with one thread on 2 cores and
six of them (3 pairs) over 5 minutes, so the defaults were made smaller; the earlier size is
``--d-model 512 --ffn 2048 --heads 8``.

    OMP_NUM_THREADS=1 python bench/lora_vs_full.py                       # summarization, 256-d Marian, 3 pairs
    python bench/lora_vs_full.py --d-model 512 --ffn 2048 --heads 8     # the earlier 45M-parameter size
    python bench/lora_vs_full.py --steps 20 --d-model 768 --layers 6 --pairs 5 -- train.batch_size=16

Printed per pair, then side by side (median over pairs for each variant, and the median of the per-pair
lora/full ratios): peak memory (CUDA: max allocated; CPU: peak RSS and its rise over the RSS before the
model was loaded), median step time, training-checkpoint size and exported-model size.
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
    config.update(
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
    )
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

    from accel_tasks.preflight import make_plan, resolve_config
    from accel_tasks.training import finish, meter, steps
    from accel_tasks.training.loop import run

    # One timestamp per micro-batch, taken where the loop accounts for it (after backward and step).
    stamps: list[float] = []
    original_add = meter.ThroughputMeter.add

    def timed_add(self: Any, *args: Any, **kwargs: Any) -> None:
        stamps.append(time.perf_counter())
        original_add(self, *args, **kwargs)

    meter.ThroughputMeter.add = timed_add
    # The high-water mark after the training steps, before the first checkpoint save or the export
    # (serialising weights has its own peak, the same for both variants).
    train_peak: list[int] = []

    def marked(function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            train_peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            return function(*args, **kwargs)

        return wrapper

    steps.save_checkpoint = marked(steps.save_checkpoint)
    finish.export_model = marked(finish.export_model)
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
    line = next(text for text in proc.stdout.splitlines() if text.startswith(MARKER))
    result = json.loads(line[len(MARKER) :])
    # Skip the first steps (allocation, warm-up); the median ignores a step that includes a checkpoint save.
    times = result["step_times_s"][2:]
    result["step_s"] = statistics.median(times) if times else float("nan")
    params = PARAMS_LINE.search(proc.stdout)
    result["trainable"], result["total"] = (int(params.group(i).replace(",", "")) for i in (1, 2)) if params else (0, 0)
    checkpoints = sorted((out / "checkpoints").glob("step_*"))
    result["checkpoint_bytes"] = dir_size(checkpoints[-1]) if checkpoints else 0
    model = out / "model"
    result["export_weights_bytes"] = dir_size(model, "adapter_model.safetensors") or dir_size(
        model, "model*.safetensors"
    )
    result["export_dir_bytes"] = dir_size(model)
    return result


def fmt_bytes(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f} MiB"


def pair_ratios(full: dict, lora: dict) -> dict[str, Optional[float]]:
    """lora/full for the figures that vary between runs."""

    def r(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return b / a if a and b else None

    return {
        "step": r(full["step_s"], lora["step_s"]),
        "rss_rise": r(
            full["rss_train_peak_bytes"] - full["rss_baseline_bytes"],
            lora["rss_train_peak_bytes"] - lora["rss_baseline_bytes"],
        ),
        "rss_peak": r(full["rss_peak_bytes"], lora["rss_peak_bytes"]),
        "cuda": r(full.get("cuda_peak_bytes"), lora.get("cuda_peak_bytes")),
    }


def median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(fulls: list[dict], loras: list[dict]) -> None:
    """Each variant's median over pairs, and the median of the per-pair lora/full ratios."""

    def rise(result: dict) -> int:
        return result["rss_train_peak_bytes"] - result["rss_baseline_bytes"]

    getters = []
    if fulls[0].get("cuda_peak_bytes"):
        getters.append(("peak CUDA memory (max allocated)", lambda x: x["cuda_peak_bytes"], fmt_bytes))
    getters += [
        ("trainable parameters", lambda x: x["trainable"], lambda n: f"{n:,.0f}"),
        ("peak RSS, whole run", lambda x: x["rss_peak_bytes"], fmt_bytes),
        ("peak RSS, until the first save", lambda x: x["rss_train_peak_bytes"], fmt_bytes),
        ("  same, above pre-model baseline", rise, fmt_bytes),
        ("median step time", lambda x: x["step_s"], lambda s: f"{s * 1000:,.1f} ms"),
        ("training checkpoint (dir)", lambda x: x["checkpoint_bytes"], fmt_bytes),
        ("exported weights (model vs adapter)", lambda x: x["export_weights_bytes"], fmt_bytes),
        ("exported model/ dir", lambda x: x["export_dir_bytes"], fmt_bytes),
    ]
    width = max(len(g[0]) for g in getters)
    print(f"\nmedian over {len(fulls)} pairs")
    print(f"{'':<{width}}  {'full':>14}  {'lora':>14}  {'lora/full':>9}  per pair")
    for label, get, show in getters:
        a = median([get(x) for x in fulls])
        b = median([get(x) for x in loras])
        per_pair = [get(lora) / get(full) if get(full) else None for full, lora in zip(fulls, loras)]
        spread = ", ".join("-" if v is None else f"{v:.3f}" for v in per_pair)
        mid = median(per_pair)
        print(f"{label:<{width}}  {show(a):>14}  {show(b):>14}  {'-' if mid is None else f'{mid:.3f}':>9}  {spread}")
    print(f"total parameters: {fulls[0]['total']:,} (full) / {loras[0]['total']:,} (lora, adapter included)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="summarization")
    parser.add_argument("--model-dir", type=Path, help="model dir to scale (default: the recipe's bundled model)")
    parser.add_argument("--no-scale", action="store_true", help="use --model-dir as it is")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=3, help="full/LoRA pairs, order alternating (>= 3)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("overrides", nargs="*", help="extra key=value settings for both variants (after --)")
    args = parser.parse_args(argv)
    if args.child:
        child(args.overrides)
        return 0
    if args.pairs < 3:
        parser.error("--pairs must be at least 3")

    from accel_tasks.registry import load_recipe_class

    recipe_cls = load_recipe_class(args.recipe)
    source = args.model_dir or (recipe_cls.sample_dir / "model" if recipe_cls.sample_dir else None)
    if source is None or not (Path(source) / "config.json").is_file():
        sys.exit(
            f"[bench] no model dir: pass --model-dir "
            f"(the bundled {source} is missing; build it with scripts/build_samples.py)"
        )
    work = Path(tempfile.mkdtemp(prefix="lora_vs_full_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    model_dir = (
        Path(source)
        if args.no_scale
        else scaled_model_dir(Path(source), work / "bench_model", args.d_model, args.layers, args.ffn, args.heads)
    )
    common = [
        f"recipe={args.recipe}",
        f"model.name_or_path={model_dir}",
        f"train.max_steps={args.steps}",
        f"train.save_every={args.steps}",
        f"train.batch_size={args.batch_size}",
        "train.log_every=1",
        "train.overwrite_output_dir=true",
        "data.max_eval_samples=8",
        "eval.batch_size=8",
        "generation.num_beams=1",
        "generation.max_new_tokens=8",
        f"data.max_train_samples={args.steps * args.batch_size}",
        *args.overrides,
    ]
    variants = {"full": common, "lora": [*common, "peft.method=lora", f"peft.r={args.r}"]}
    results: dict[str, list[dict]] = {"full": [], "lora": []}
    for pair in range(args.pairs):
        order = ("full", "lora") if pair % 2 == 0 else ("lora", "full")
        for name in order:
            results[name].append(run_variant(name, variants[name], work / name))
        ratios = pair_ratios(results["full"][-1], results["lora"][-1])
        shown = {k: "-" if v is None else f"{v:.3f}" for k, v in ratios.items()}
        cuda = f"  peak CUDA {shown['cuda']}" if ratios["cuda"] is not None else ""
        print(
            f"[bench] pair {pair + 1} ({order[0]} first): lora/full step time {shown['step']} "
            f"({results['lora'][-1]['step_s'] * 1000:.1f} / {results['full'][-1]['step_s'] * 1000:.1f} ms)  "
            f"RSS rise {shown['rss_rise']}  peak RSS {shown['rss_peak']}{cuda}",
            flush=True,
        )
    print(
        f"[bench] model {model_dir} ({args.d_model}-d, {args.layers}+{args.layers} layers), "
        f"{args.steps} steps of batch {args.batch_size}, LoRA r={args.r}, {args.pairs} pairs"
    )
    report(results["full"], results["lora"])
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
