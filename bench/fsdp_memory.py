"""Memory per process under FSDP2 against DDP, and step time against DeepSpeed ZeRO-3, in real accel_tasks runs.

Each side is a plain ``accelerate launch ... -m accel_tasks.run`` training run of the summarization recipe on the
bundled sample data, 2 processes, the same model, data and run settings, with a shipped accelerate config:

    fsdp_full     accelerate_configs/fsdp2.yaml: FSDP2 full shard (fsdp_reshard_after_forward: true);
    fsdp_grad_op  a copy of fsdp2.yaml in the bench's temp dir with fsdp_reshard_after_forward: false (grad-op shard:
                  parameters stay gathered from forward to backward);
    ddp           accelerate_configs/cpu_2proc.yaml: plain data parallel (torch DDP, gloo);
    zero3         accelerate_configs/deepspeed_zero3.yaml: DeepSpeed ZeRO-3 (for the step time);

all with ``--num_processes 2 --mixed_precision no``: fp32 everywhere by default, so that every byte count is exact
(no bf16 copies or casts on one side only); ``--mixed-precision bf16`` runs the same in bf16. The model is the BART of
bench/zero_memory.py built from a config (random weights, ~60.8M parameters; ``--small`` for a 4-layer one), and the
run's recipe is the probe both benches share, ``recipe=bench/memory_probe.py:MemoryProbe`` (its docstring says what
it counts). It counts at three points of each run:

    micro_batch     the start of micro-batch 4 (train.grad_accum=2: one step done, micro-batch 3 accumulated);
    after_forward   after micro-batch 4's forward, before its backward;
    optimizer_step  just before the optimizer's step 2: gradients reduced, all model states alive at once.

Model states (weights + gradients + optimizer state held by the process; under FSDP2 the local shards of the DTensor
parameters, gradients and Adam states) at the optimizer step are the headline: FSDP2 full shard / DDP (goal <= 0.55)
and grad-op shard / DDP. Step time is read from the probe's per-micro-batch clock: the mean optimizer step from the
start of step ``--warmup`` + 1 to the start of the last step (warm-up and the counting excluded), worst rank.
Every side runs once per pair; the order reverses every other pair (pair 1 fsdp_full first, pair 2 zero3 first, ...);
per-pair ratios (worst rank of each side) and their medians are printed.

    python bench/fsdp_memory.py --pairs 3
    python bench/fsdp_memory.py --pairs 2 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from memory_probe import (  # shared with bench/zero_memory.py (bench/ is on sys.path)
    CONFIGS,
    MODEL,
    PROCESSES,
    Side,
    build_model_dir,
    command_for,
    ratio_line,
    run_pairs,
    run_settings,
    shown,
    worst,
)

ACCUM = 2  # train.grad_accum of run_settings
PROBE_AT, PROBE_STEP = 4, 2  # the micro-batch and the optimizer step counted (both inside the warm-up)
POINTS = ("micro_batch", "after_forward", "optimizer_step")
SMALL = dict(MODEL, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=1024, decoder_ffn_dim=1024, vocab_size=8000)
MIB = 1024**2
WIDTH = 54  # of a ratio line's label


def grad_op_config(tmp: Path) -> Path:
    """fsdp2.yaml with the one line that makes it grad-op shard."""
    text = (CONFIGS / "fsdp2.yaml").read_text()
    if "fsdp_reshard_after_forward: true" not in text:
        raise SystemExit("accelerate_configs/fsdp2.yaml no longer says fsdp_reshard_after_forward: true")
    path = tmp / "fsdp2_grad_op.yaml"
    path.write_text(text.replace("fsdp_reshard_after_forward: true", "fsdp_reshard_after_forward: false"))
    return path


def sides(tmp: Path, mixed_precision: str) -> list[Side]:
    """The four sides, each a shipped accelerate config (grad-op: its temp copy) with the same flags on top."""
    flags = ("--num_processes", str(PROCESSES), "--mixed_precision", mixed_precision)
    configs = {
        "fsdp_full": CONFIGS / "fsdp2.yaml",
        "fsdp_grad_op": grad_op_config(tmp),
        "ddp": CONFIGS / "cpu_2proc.yaml",
        "zero3": CONFIGS / "deepspeed_zero3.yaml",
    }
    return [Side(name, ("--config_file", str(path), *flags)) for name, path in configs.items()]


def step_seconds(rank: dict[str, Any], warmup: int, steps: int) -> float:
    """Mean seconds of an optimizer step from the start of step warmup + 1 to the start of the last step."""
    starts = rank["micro_batch_starts"]
    if len(starts) != steps * ACCUM:
        raise SystemExit(f"rank {rank['rank']} ran {len(starts)} micro-batches, not {steps * ACCUM}")
    if any(call > warmup * ACCUM for call, _ in rank["probe_seconds"]):
        raise SystemExit("the memory was counted inside the timed steps: raise --warmup")
    return (starts[(steps - 1) * ACCUM] - starts[warmup * ACCUM]) / (steps - 1 - warmup)


def print_header(args: argparse.Namespace, the_sides: list[Side], model_dir: Path, tmp: Path) -> None:
    """The model, the exact commands, and the settings every side shares."""
    sizes = SMALL if args.small else MODEL
    print(f"model: BART from {model_dir.name}/config.json, random weights: {json.dumps(sizes)}")
    for side in the_sides:
        print(f"{side.name}: {shown(command_for(side, [f'model.name_or_path={model_dir}'], tmp / 'out'), tmp)}")
    print("  (<tmp>/fsdp2_grad_op.yaml: accelerate_configs/fsdp2.yaml with fsdp_reshard_after_forward: false)")
    print(
        f"run settings (every side): {' '.join(run_settings(args.steps))}; bundled sample data; "
        "everything else the toolkit's and the configs' defaults"
    )
    print(
        f"non-default knob: --mixed_precision {args.mixed_precision} on every launcher"
        + (" (fp32: exact byte counts)" if args.mixed_precision == "no" else "")
    )
    print(
        f"memory counted at the start of micro-batch {PROBE_AT}, after its forward, and before optimizer step "
        f"{PROBE_STEP}; step time: mean of steps {args.warmup + 1}..{args.steps - 1} (start to start; warm-up "
        f"{args.warmup} steps); ratios use the worst rank of each side",
        flush=True,
    )


def print_runs(pairs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """One line per pair, side and rank: model states at each point, the rest at the step, and the step time."""
    params = pairs[0]["fsdp_full"][0]["params"]
    first = pairs[0]["fsdp_full"][0]
    print(f"\n{params:,} parameters; {first['processes']} processes; mixed_precision={first['mixed_precision']}")
    print(
        f"{'pair':>4} {'side':<12} {'rank':>4} {'states@mb4':>10} {'@forward':>9} {'@step':>8} {'B/param':>7} "
        f"{'weights':>8} {'grads':>8} {'optim':>8} {'buffers':>8} {'other':>6} {'base':>5} {'peak@mb1':>8} "
        f"{'RSS@step':>8} {'peak@step':>9} {'peak RSS':>8} {'step s':>6}  (MiB)"
    )
    for number, pair in enumerate(pairs, 1):
        for side in pair["order"]:
            for r in sorted(pair[side], key=lambda r: r["rank"]):
                at, b = r["points"]["optimizer_step"], r["points"]["optimizer_step"]["bytes"]
                states = [r["points"][p]["model_state_bytes"] / MIB for p in POINTS]
                print(
                    f"{number:>4} {side:<12} {r['rank']:>4} {states[0]:>10.1f} {states[1]:>9.1f} {states[2]:>8.1f} "
                    f"{at['model_state_bytes'] / params:>7.2f} {b['weights'] / MIB:>8.1f} "
                    f"{b['gradients'] / MIB:>8.1f} {b['optimizer'] / MIB:>8.1f} {b['buffers'] / MIB:>8.1f} "
                    f"{b['other'] / MIB:>6.1f} {r['baseline_rss'] / MIB:>5.0f} {r['peak_rss_at_start'] / MIB:>8.0f} "
                    f"{at['rss_at_probe'] / MIB:>8.0f} {at['peak_rss_at_probe'] / MIB:>9.0f} "
                    f"{r['peak_rss_run'] / MIB:>8.0f} {step_seconds(r, args.warmup, args.steps):>6.2f}"
                )
    print(
        "states = weights + gradients + optimizer state held by the process (DTensors: their local shards); "
        "mb4 = start of micro-batch 4"
    )
    print(
        "(micro-batch 3's gradients accumulated), forward = after its forward, step = before optimizer step 2; "
        "B/param .. other at the step;"
    )
    print(
        "base = RSS just before the model is built; peak@mb1 = ru_maxrss at the first micro-batch (model built and "
        "wrapped or sharded,"
    )
    print(
        "nothing trained); RSS@step = RSS at the step; peak@step = ru_maxrss then; peak RSS = ru_maxrss over the "
        "whole run (export, final eval);"
    )
    print("step s = mean optimizer step after the warm-up")


def print_holders(pairs: list[dict[str, Any]]) -> None:
    """Where the bytes of pair 1, rank 0 sit, per side and point (the five largest holders)."""
    for side in pairs[0]["order"] if pairs[0]["order"][0] == "fsdp_full" else pairs[0]["order"][::-1]:
        rank0 = next(r for r in pairs[0][side] if r["rank"] == 0)
        print(f"{side} rank 0 (pair 1, {rank0['engine']}):")
        for point in POINTS:
            held = rank0["points"][point]["held_by_path"]
            print(f"  {point:<14} " + "; ".join(f"{k} {v / MIB:.1f}" for k, v in list(held.items())[:5]))


def print_ratios(pairs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Per-pair ratios and medians: memory (FSDP2 over DDP), then step time (FSDP2 over ZeRO-3)."""

    def memory(point: str, key: str) -> Callable[[list[dict[str, Any]]], float]:
        return lambda ranks: worst(ranks, point, key)

    def step_time(ranks: list[dict[str, Any]]) -> float:
        return max(step_seconds(r, args.warmup, args.steps) for r in ranks)

    full, grad_op = ("fsdp_full", "ddp"), ("fsdp_grad_op", "ddp")
    rows = [
        ("model states at the step", full, memory("optimizer_step", "model_state_bytes")),
        ("model states at the step", grad_op, memory("optimizer_step", "model_state_bytes")),
        ("model states at micro-batch 4", full, memory("micro_batch", "model_state_bytes")),
        ("model states at micro-batch 4", grad_op, memory("micro_batch", "model_state_bytes")),
        ("weights after the forward", full, memory("after_forward", "bytes.weights")),
        ("weights after the forward", grad_op, memory("after_forward", "bytes.weights")),
        ("all live tensors at the step", full, memory("optimizer_step", "live_tensor_bytes")),
        ("peak RSS before training", full, memory("run", "peak_rss_at_start")),
        ("RSS at the step", full, memory("optimizer_step", "rss_at_probe")),
        ("peak RSS up to the step", full, memory("optimizer_step", "peak_rss_at_probe")),
        ("peak RSS, whole run", full, memory("run", "peak_rss_run")),
        ("peak RSS over baseline", full, memory("run", "peak_rss_increase")),
    ]
    print(f"\nFSDP2 / DDP per process (formula for model states: 1/N = {1 / PROCESSES:.2f}; goal <= 0.55 at the step)")
    for label, pair_sides, values in rows:
        print(ratio_line(f"{'/'.join(pair_sides) + ':':<24} {label}", pairs, pair_sides, values, WIDTH))
    print("\nFSDP2 / DeepSpeed ZeRO-3, same model (step time: no goal), and step times for context")
    states = memory("optimizer_step", "model_state_bytes")
    label = f"{'fsdp_full/zero3:':<24} model states at the step"
    print(ratio_line(label, pairs, ("fsdp_full", "zero3"), states, WIDTH))
    for pair_sides in (("fsdp_full", "zero3"), ("fsdp_full", "ddp"), ("fsdp_grad_op", "fsdp_full")):
        print(ratio_line(f"{'/'.join(pair_sides) + ':':<24} step time", pairs, pair_sides, step_time, WIDTH))


def main() -> None:
    """Build the model once, run the rounds in a temporary directory, then print the runs, the holders, the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="rounds of all four sides; the order reverses each round")
    parser.add_argument("--steps", type=int, default=16, help="train.max_steps of each run (2 micro-batches per step)")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps left out of the step time")
    parser.add_argument(
        "--mixed-precision", default="no", choices=["no", "bf16"], help="--mixed_precision of every side"
    )
    parser.add_argument("--small", action="store_true", help="a 2+2-layer BART with an 8k vocabulary (quick checks)")
    args = parser.parse_args()
    if args.warmup < PROBE_STEP or args.steps < args.warmup + 2:
        parser.error(f"--warmup must cover the counted step ({PROBE_STEP}) and --steps leave 1 timed step after it")
    with tempfile.TemporaryDirectory(prefix="fsdp_memory_") as tmp:
        root = Path(tmp)
        model_dir = build_model_dir(root / "bart", SMALL if args.small else MODEL)
        the_sides = sides(root, args.mixed_precision)
        print_header(args, the_sides, model_dir, root)
        run_args = [f"model.name_or_path={model_dir}", *run_settings(args.steps)]
        probe_env = {
            "MEMORY_PROBE_AT": str(PROBE_AT),
            "MEMORY_PROBE_STEP": str(PROBE_STEP),
            "MEMORY_PROBE_POINTS": ",".join(POINTS),
        }
        pairs = run_pairs(the_sides, args.pairs, run_args, root, probe_env)
    print_runs(pairs, args)
    print_holders(pairs)
    print_ratios(pairs, args)


if __name__ == "__main__":
    sys.exit(main())
