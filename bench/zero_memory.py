"""Memory per process under DeepSpeed ZeRO-3 versus ZeRO-0, measured inside real accel_tasks training runs.

Each side is a plain ``accelerate launch ... -m accel_tasks.run`` training run of the summarization
recipe on the bundled sample data, with the repo's own accelerate configs and the toolkit's defaults:

    zero3: accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml --num_processes 2 \\
               -m accel_tasks.run ...
    zero0: accelerate launch --config_file accelerate_configs/deepspeed_zero1.yaml --num_processes 2 --zero_stage 0 \\
               -m accel_tasks.run ...

(`--zero_stage 0` is what deepspeed_zero1.yaml's header says gives plain DeepSpeed DDP). The model is a
BART built from a config (random weights, ~60M parameters with the default sizes) in a local directory
the script writes, with the bundled sample's tokenizer. The only thing added to the run is the recipe
``recipe=bench/memory_probe.py:MemoryProbe``, the probe this bench shares with bench/fsdp_memory.py (its docstring
says what it counts and how): a subclass of the built-in SummarizationRecipe whose hooks measure, without changing
what the run does, here at one point, the start of micro-batch ``--probe-at`` (default 4: one optimizer step done,
so Adam states exist, and micro-batch 3's gradients accumulated):
  weights, gradients, optimizer (model states = their sum: what the ZeRO formulas, 16 / 16/N bytes per parameter,
  count), buffers (other tensors the DeepSpeed engine or optimizer holds: communication buckets), other (the batch);
  ru_maxrss (peak RSS) so far; and at exit ru_maxrss again (the whole run: export and final eval included).

A plugin recipe does not inherit the built-in preset (preset_file is not inherited), so the run settings
(below, printed at the start) are passed explicitly as key=value overrides, identical on both sides.
Pairs alternate which side runs first (pair 1 zero3 first, pair 2 zero0 first, ...); per-pair ratios
ZeRO-3 / ZeRO-0 (worst rank of each side) and their medians are printed.

    python bench/zero_memory.py --pairs 3
    python bench/zero_memory.py --pairs 3 --mixed-precision no   # fp32, not the configs' bf16 (a non-default knob)

On a CPU-only machine the ranks share one RAM and torch.empty pages are not resident until written,
so peak RSS is a weaker signal than the model-state bytes; GPUs allocate a buffer in full.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from memory_probe import (  # shared with bench/fsdp_memory.py (bench/ is on sys.path)
    CONFIGS,
    MODEL,
    PROCESSES,
    Side,
    build_model_dir,
    command_for,
    point_value,
    ratio_line,
    run_pairs,
    run_settings,
    shown,
    worst,
)

POINT = "micro_batch"
LAUNCHERS = {
    # name: launcher arguments (the shipped accelerate config; flags a user would type on top of it)
    "zero3": ["--config_file", str(CONFIGS / "deepspeed_zero3.yaml"), "--num_processes", str(PROCESSES)],
    "zero0": [
        "--config_file",
        str(CONFIGS / "deepspeed_zero1.yaml"),
        "--num_processes",
        str(PROCESSES),
        "--zero_stage",
        "0",
    ],
}


def sides(mixed_precision: str) -> list[Side]:
    """ZeRO-3 and ZeRO-0, with ``--mixed_precision`` on top where it is not the configs' own."""
    extra = [] if mixed_precision == "config" else ["--mixed_precision", mixed_precision]
    return [Side(name, tuple(args + extra)) for name, args in LAUNCHERS.items()]


def print_header(args: argparse.Namespace, model_dir: Path, tmp: Path) -> None:
    """The model, the exact commands, and the settings every side shares."""
    print(f"model: BART from {model_dir.name}/config.json, random weights: {json.dumps(MODEL)}")
    for side in sides(args.mixed_precision):
        print(f"{side.name}: {shown(command_for(side, [f'model.name_or_path={model_dir}'], tmp / 'out'), tmp)}")
    print(
        f"run settings (both sides): {' '.join(run_settings(args.steps))}; bundled sample data; "
        "everything else the toolkit's defaults"
    )
    print(
        "non-default knobs: none "
        "(DeepSpeed buffers, threads, optimizer: as the toolkit and the shipped configs set them)"
        if args.mixed_precision == "config"
        else f"non-default knob: --mixed_precision {args.mixed_precision} on the launcher"
    )
    print(
        f"memory counted at the start of micro-batch {args.probe_at}; ratios use the worst rank of each side",
        flush=True,
    )


def print_table(pairs: list[dict[str, Any]]) -> None:
    """One line per pair, side and rank (MiB), then what the columns mean and the largest holders."""
    mib = 1024**2
    params = pairs[0]["zero3"][0]["params"]
    print(f"\n{params:,} parameters; {PROCESSES} processes; mixed_precision={pairs[0]['zero3'][0]['mixed_precision']}")
    print(
        f"{'pair':>4} {'setting':<6} {'rank':>4} {'weights':>8} {'grads':>8} {'optim':>8} {'states':>8} {'B/param':>7} "
        f"{'buffers':>8} {'other':>6} {'all live':>9} {'peak@probe':>10} {'peak RSS':>9} {'+ over base':>11}   (MiB)"
    )
    for number, pair in enumerate(pairs, 1):
        for setting in pair["order"]:
            for r in sorted(pair[setting], key=lambda r: r["rank"]):
                at = r["points"][POINT]
                b = at["bytes"]
                print(
                    f"{number:>4} {setting:<6} {r['rank']:>4} {b['weights'] / mib:>8.1f} {b['gradients'] / mib:>8.1f} "
                    f"{b['optimizer'] / mib:>8.1f} {at['model_state_bytes'] / mib:>8.1f} "
                    f"{at['model_state_bytes'] / params:>7.2f} "
                    f"{b['buffers'] / mib:>8.1f} {b['other'] / mib:>6.1f} {at['live_tensor_bytes'] / mib:>9.1f} "
                    f"{at['peak_rss_at_probe'] / mib:>10.0f} {r['peak_rss_run'] / mib:>9.0f} "
                    f"{point_value(r, POINT, 'peak_rss_increase') / mib:>11.0f}"
                )
    print(
        "states = weights + gradients + optimizer (what the ZeRO formulas count); buffers = other tensors the DeepSpeed"
    )
    print(
        "engine/optimizer holds; peak@probe = ru_maxrss when counted (model built, 1 step, 3 micro-batches); "
        "peak RSS = ru_maxrss"
    )
    print(
        "over the whole run (export and final eval included); "
        "+ over base = peak RSS minus the RSS just before the model was built"
    )
    for setting in LAUNCHERS:
        biggest = pairs[0][setting][0]["points"][POINT]["held_by_path"]
        print(
            f"largest holders, {setting} rank 0 (pair 1): "
            + "; ".join(f"{k} {v / mib:.1f}" for k, v in list(biggest.items())[:5])
        )


def print_ratios(pairs: list[dict[str, Any]]) -> None:
    """ZeRO-3 / ZeRO-0 per pair and the median: the model states against the formula, then what a process really
    holds (all live tensors, peak RSS), where DeepSpeed's buffers show."""
    measures = [
        ("model-state bytes", POINT, "model_state_bytes"),
        ("all live tensor bytes", POINT, "live_tensor_bytes"),
        ("peak RSS at probe", POINT, "peak_rss_at_probe"),
        ("peak RSS", "run", "peak_rss_run"),
        ("peak RSS over baseline", "run", "peak_rss_increase"),
    ]
    print(f"\nZeRO-3 / ZeRO-0 per process (formula for model states: 1/N = {1 / PROCESSES:.2f})")
    for label, point, key in measures:
        print(ratio_line(label, pairs, ("zero3", "zero0"), lambda ranks: worst(ranks, point, key)))


def main() -> None:
    """Build the model once, run the pairs in a temporary directory, then print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="ZeRO-3 / ZeRO-0 pairs; the first side alternates")
    parser.add_argument("--steps", type=int, default=2, help="train.max_steps of each run (2 micro-batches per step)")
    parser.add_argument("--probe-at", type=int, default=4, help="micro-batch at whose start the memory is counted")
    parser.add_argument(
        "--mixed-precision",
        default="config",
        choices=["config", "no", "bf16"],
        help="config: each accelerate config's own (bf16); anything else is passed as --mixed_precision",
    )
    args = parser.parse_args()
    if args.probe_at > 2 * args.steps:
        parser.error("--probe-at must be a micro-batch of the run (at most 2 x --steps)")
    with tempfile.TemporaryDirectory(prefix="zero_memory_") as tmp:
        root = Path(tmp)
        model_dir = build_model_dir(root / "bart", MODEL)
        print_header(args, model_dir, root)
        run_args = [f"model.name_or_path={model_dir}", *run_settings(args.steps)]
        probe_env = {"MEMORY_PROBE_AT": str(args.probe_at), "MEMORY_PROBE_POINTS": POINT}
        pairs = run_pairs(sides(args.mixed_precision), args.pairs, run_args, root, probe_env)
    print_table(pairs)
    print_ratios(pairs)


if __name__ == "__main__":
    sys.exit(main())
