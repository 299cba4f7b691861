"""Gradient compression: bytes all-reduced per optimizer step with and without it, and the 2-process step-time ratio.

Bytes are computed from the model's gradient tensors (every trainable parameter), by torch's rules:

* none: every gradient in float32, sum of numel x 4 bytes;
* fp16: the same elements in float16 (x 2 bytes);
* powersgd (after its warm-up): each gradient viewed as a matrix n x m (``shape[0] x rest``) is sent as P (n x r)
  and Q (m x r), r = min(n, m, rank), when (n + m) r x 2 < n m (``min_compression_rate`` 2); 1-D tensors
  (n x 1) and matrices that would not shrink are sent whole. During the warm-up (``train.powersgd_start_iter``
  steps) PowerSGD sends what "none" sends.

These are the payloads handed to ``all_reduce`` (a ring all-reduce moves 2 (N - 1) / N times that per process).
The PowerSGD count is checked against the hook's own: each timed worker reads PowerSGDState's
``total_numel_after_compression`` after its steps, and the bench stops if the two disagree.

Step time: each repeat runs 3 fresh 2-process launches (accelerate_configs/cpu_2proc.yaml, gloo), in rotated order
(none, powersgd, fp16; then powersgd, fp16, none; ...). Every worker builds the Accelerator with
``accel_tasks.engines.accelerator.build_accelerator`` (the run's own path: the DDP communication hook is registered by
accelerate's ``prepare``), trains the bundled summarization Marian (or a wider one, ``--d-model``) on a fixed random
batch, and reports the median time of its steps after the first ``--skip`` (DDP's bucket rebuild and PowerSGD's
allocation happen there; PowerSGD starts compressing at step 3).

    ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python bench/grad_compression.py
    ACCEL_TASKS_NUM_THREADS=1 .venv/bin/python bench/grad_compression.py --d-model 512 --steps 30 --repeats 3 --rank 4

Last lines: ``median step time powersgd/none: X, fp16/none: Y`` and the bytes per step of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "accel_tasks" / "samples" / "summarization" / "model"
MODES = ("none", "powersgd", "fp16")
MIN_COMPRESSION_RATE = 2  # torch PowerSGDState's default, which accelerate keeps


def build_model(d_model: int) -> Any:
    """The bundled summarization Marian; ``d_model`` other than 128 widens it (feed-forward 4 x d_model)."""
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig.from_pretrained(MODEL_DIR)
    if d_model != config.d_model:
        config.d_model, config.encoder_ffn_dim, config.decoder_ffn_dim = d_model, 4 * d_model, 4 * d_model
    return MarianMTModel(config)


def payload_bytes(shapes: list[tuple[int, ...]], rank: int) -> dict[str, int]:
    """Bytes handed to all_reduce per step for each mode, from the gradient shapes (torch's powerSGD_hook rules)."""
    numel = [_numel(shape) for shape in shapes]
    compressed_elements = 0
    for shape, count in zip(shapes, numel):
        n = shape[0] if shape else 1
        m = count // n if n else 0
        r = min(n, m, rank)
        compressed = (n + m) * r
        compressed_elements += compressed if compressed * MIN_COMPRESSION_RATE < n * m else count
    return {"none": 4 * sum(numel), "fp16": 2 * sum(numel), "powersgd": 4 * compressed_elements}


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def worker(mode: str, steps: int, skip: int, d_model: int, rank: int, batch: int, length: int) -> dict:
    """One process of a 2-process launch: ``steps`` timed optimizer steps through the run's Accelerator."""
    import torch

    from accel_tasks.engines.accelerator import build_accelerator, configure_threads
    from accel_tasks.preflight import resolve_config

    overrides = ["recipe=summarization", "train.report_to=[none]"]
    if mode != "none":
        overrides += [f"train.grad_compression={mode}", "train.powersgd_start_iter=2", f"train.powersgd_rank={rank}"]
    cfg, _ = resolve_config(overrides, None)
    configure_threads(cfg.train.threads)
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        accelerator = build_accelerator(cfg, Path(tmp))
        torch.manual_seed(0)
        model = build_model(d_model)
        shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model, optimizer = accelerator.prepare(model, optimizer)
        generator = torch.Generator().manual_seed(1 + accelerator.process_index)
        vocab = accelerator.unwrap_model(model).config.vocab_size
        inputs = torch.randint(2, vocab, (batch, length), generator=generator)
        labels = torch.randint(2, vocab, (batch, length // 2), generator=generator)
        times = []
        for _ in range(steps):
            accelerator.wait_for_everyone()
            start = time.perf_counter()
            loss = model(input_ids=inputs, attention_mask=torch.ones_like(inputs), labels=labels).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - start)
        hook_elements = None
        if mode == "powersgd":
            from accel_tasks.engines.compression import powersgd_states

            (state,) = powersgd_states([model])
            compressed_steps = state.iter - state.start_powerSGD_iter
            hook_elements = state.total_numel_after_compression / max(1, compressed_steps)
        accelerator.wait_for_everyone()
        return {
            "mode": mode,
            "step_s": statistics.median(times[skip:]),
            "shapes": shapes,
            "hook_elements_per_step": hook_elements,
            "parameters": sum(_numel(s) for s in shapes),
            "rank0": accelerator.is_main_process,
        }


def launch(mode: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("ACCEL_TASKS_NUM_THREADS", "1")
    out = Path(tempfile.mkdtemp(prefix="bench-gc-results-"))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / "cpu_2proc.yaml"),
        "--main_process_port",
        str(free_port()),
        __file__,
        "--worker",
        mode,
        "--out",
        str(out),
        "--steps",
        str(args.steps),
        "--skip",
        str(args.skip),
        "--d-model",
        str(args.d_model),
        "--rank",
        str(args.rank),
        "--batch",
        str(args.batch),
        "--length",
        str(args.length),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    # One file per process: the two processes share one stdout, where their lines can interleave.
    results = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    if done.returncode != 0 or len(results) != 2:
        raise RuntimeError(f"{mode} launch failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    # A step ends on both ranks together (the all-reduce): the slower rank's median is the step time.
    main = next(r for r in results if r["rank0"])
    main["step_s"] = max(r["step_s"] for r in results)
    return main


def free_port() -> int:
    """A port no other job on the machine holds (2-process launches of others would collide on the default)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--skip", type=int, default=4, help="first steps left out of the median (bucket rebuild, PowerSGD start)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=128, help="128: the bundled model; wider: more bytes per step")
    parser.add_argument("--rank", type=int, default=1, help="train.powersgd_rank")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.steps, args.skip, args.d_model, args.rank, args.batch, args.length)
        Path(args.out, f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(result))
        return 0
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    payload: dict[str, int] = {}
    for repeat in range(args.repeats):
        order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
        for mode in order:
            result = launch(mode, args)
            times[mode].append(result["step_s"])
            if not payload:
                payload = payload_bytes([tuple(s) for s in result["shapes"]], args.rank)
                print(
                    f"model: Marian d_model={args.d_model}, {result['parameters']:,} trainable parameters "
                    f"in {len(result['shapes'])} tensors; "
                    f"batch {args.batch} x {args.length} tokens per process, 2 processes (gloo)"
                )
            if (
                result["hook_elements_per_step"] is not None
                and abs(result["hook_elements_per_step"] * 4 - payload["powersgd"]) > 0.5
            ):
                raise RuntimeError(
                    f"PowerSGD's own count {result['hook_elements_per_step'] * 4:.0f} bytes/step "
                    f"!= computed {payload['powersgd']}"
                )
        print(
            f"repeat {repeat + 1} ({', '.join(order)}): "
            + ", ".join(f"{m} {times[m][-1] * 1000:.1f} ms" for m in MODES)
            + f"; powersgd/none {times['powersgd'][-1] / times['none'][-1]:.3f}, "
            f"fp16/none {times['fp16'][-1] / times['none'][-1]:.3f}"
        )
    print(
        "PowerSGD's own count of elements sent per step (PowerSGDState.total_numel_after_compression) "
        "matches the computed bytes"
    )
    for mode in MODES:
        print(
            f"all-reduced per step, {mode}: {payload[mode]:,} bytes "
            f"({payload[mode] / payload['none']:.4f} of uncompressed)"
            + (f" after the warm-up (rank {args.rank})" if mode == "powersgd" else "")
        )
    ratios = {m: statistics.median(t / n for t, n in zip(times[m], times["none"])) for m in ("powersgd", "fp16")}
    print(f"median step time powersgd/none: {ratios['powersgd']:.3f}, fp16/none: {ratios['fp16']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
