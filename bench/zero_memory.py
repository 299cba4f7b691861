"""Memory per process for model states: DDP / DeepSpeed ZeRO-0 versus ZeRO-3 (and ZeRO-3 + offload).

Two CPU processes train a >= 50M-parameter BART built from a config for 2 optimizer steps (2 micro-batches
each) under each setting. Two measures per process:

* model states: bytes of every live tensor storage (weights, accumulated gradients, Adam states, engine
  buffers) at micro-batch 3, when all of them exist at once - what the ZeRO formulas predict;
* peak RSS +: the process's sampled peak resident memory minus what it held just before the model was
  built - what an out-of-memory sees on this machine (includes transient gathers and freed pages glibc
  keeps; a GPU caching allocator behaves differently).

    python bench/zero_memory.py --small-buffers                  # fp32, all settings (~8 min on 2 busy cores)
    python bench/zero_memory.py --small-buffers --mixed-precision bf16
    python bench/zero_memory.py --settings zero0 zero3

The ratio ZeRO-3 / ZeRO-0 is printed next to the formula's prediction (1/N for N processes). On a
CPU-only machine the "device" and the offload target are the same RAM, so offload cannot save memory
here; its row shows what the offload machinery costs on top. --small-buffers sizes DeepSpeed's buckets
from the hidden size (as "auto" does) and caps the live gathered ZeRO-3 weights; DeepSpeed's defaults
are sized for billion-parameter models and dominate a 60M one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {
    # name: (DeepSpeed ZeRO stage or None for plain DDP, offload optimizer+params)
    "ddp": (None, False),
    "zero0": (0, False),
    "zero3": (3, False),
    "zero3_offload": (3, True),
}
MODEL = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
             encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=32000, max_position_embeddings=256)
# Micro-batches; 2 accumulate into each optimizer step. Model states are counted after micro-batch 3:
# Adam states exist (one update done) and gradients are accumulated, before the next update releases them.
MICRO_BATCHES = 4
GRAD_ACCUM = 2


class PeakSampler(threading.Thread):
    """Samples this process's RSS; ru_maxrss alone cannot be reset to a baseline."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.running = True

    def current(self) -> int:
        return self.process.memory_info().rss

    def reset(self) -> int:
        self.peak = self.current()
        return self.peak

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)


def live_tensor_bytes(model) -> int:
    """Bytes of every distinct tensor storage reachable from Python: weights, gradients, optimizer states, engine buffers.

    Allocator-independent: glibc keeps freed pages in RSS, and a GPU allocator would reuse them.
    """
    import gc

    import torch

    for param in model.parameters():  # give gradients and ZeRO-3 partitions a Python object gc can see
        _ = param.grad, getattr(param, "ds_tensor", None)
    gc.collect()
    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError, ReferenceError):
            continue
    return sum(storages.values())


def worker(setting: str, mixed_precision: str, out_dir: Path, small_buffers: bool) -> None:
    """One rank: build the model under the setting, train a few steps, write its measurements."""
    import gc

    import torch
    from accelerate import Accelerator, DeepSpeedPlugin
    from accelerate.utils import InitProcessGroupKwargs
    from transformers import AutoModelForSeq2SeqLM, BartConfig

    torch.set_num_threads(1)
    stage, offload = SETTINGS[setting]
    kwargs = {
        "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")],
        "mixed_precision": mixed_precision,
        "gradient_accumulation_steps": GRAD_ACCUM,
    }
    if stage is None:
        kwargs["cpu"] = True
    else:
        plugin = DeepSpeedPlugin(
            zero_stage=stage,
            offload_optimizer_device="cpu" if offload else "none",
            offload_param_device="cpu" if offload else "none",
            zero3_init_flag=stage == 3,
            gradient_accumulation_steps=GRAD_ACCUM,
            gradient_clipping=1.0,
        )
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
        if small_buffers:
            # What HF's "auto" gives (sizes from hidden_size, filled by accelerate at prepare), plus a cap on
            # gathered ZeRO-3 weights: DeepSpeed's defaults (5e8-element reduce bucket, 1e9 live parameters)
            # are sized for multi-billion models and let a 60M model be gathered whole.
            plugin.deepspeed_config["zero_optimization"].update(
                reduce_bucket_size="auto", stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
                stage3_max_live_parameters=MODEL["vocab_size"] * MODEL["d_model"], stage3_max_reuse_distance=0,
            )
        plugin.deepspeed_config["zero_force_ds_cpu_optimizer"] = False  # torch AdamW: no cpu_adam JIT build
        kwargs["deepspeed_plugin"] = plugin
    accelerator = Accelerator(**kwargs)
    sampler = PeakSampler()
    sampler.start()
    gc.collect()
    baseline = sampler.reset()
    tensors_before = live_tensor_bytes(torch.nn.Module())
    config = BartConfig(**MODEL, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = AutoModelForSeq2SeqLM.from_config(config)  # built already partitioned under ZeRO-3 (zero.Init)
    phases = {"built": sampler.peak - baseline}
    params = sum(getattr(p, "ds_numel", 0) or p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [{"input_ids": torch.randint(4, 32000, (1, 16)), "labels": torch.randint(4, 32000, (1, 8))} for _ in range(MICRO_BATCHES)]
    model, optimizer = accelerator.prepare(model, optimizer)
    phases["prepared"] = sampler.peak - baseline
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if step == 2:
                # weights + accumulated gradients + Adam states (+ engine buffers), before the update frees gradients
                states = live_tensor_bytes(accelerator.unwrap_model(model)) - tensors_before
            optimizer.step()
            optimizer.zero_grad()
        phases[f"micro{step + 1}"] = sampler.peak - baseline
    seconds = (time.perf_counter() - start) / MICRO_BATCHES
    time.sleep(0.05)
    sampler.running = False
    result = {
        "setting": setting,
        "rank": accelerator.process_index,
        "processes": accelerator.num_processes,
        "distributed": accelerator.distributed_type.value,
        "params": params,
        "baseline_bytes": baseline,
        "peak_bytes": sampler.peak,
        "peak_increase_bytes": sampler.peak - baseline,
        "model_state_bytes": states,
        "seconds_per_step": seconds,
        "phase_peaks": phases,
        "rss_end": sampler.current() - baseline,
        "loss": float(loss.detach().float()),
    }
    (out_dir / f"{setting}.rank{accelerator.process_index}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def launch(setting: str, mixed_precision: str, out_dir: Path, small_buffers: bool) -> list[dict]:
    """Two processes through the repo's own 2-process CPU launcher config."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "accelerate_configs" / "cpu_2proc.yaml"),
        __file__, "--worker", setting, "--mixed-precision", mixed_precision, "--out", str(out_dir),
    ] + (["--small-buffers"] if small_buffers else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    files = sorted(out_dir.glob(f"{setting}.rank*.json"))
    if completed.returncode != 0 or len(files) != 2:
        sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-5000:])
        raise SystemExit(f"{setting}: launch failed with exit {completed.returncode}")
    return [json.loads(f.read_text()) for f in files]


def predicted_ratio(mixed_precision: str, processes: int) -> tuple[float, str]:
    """ZeRO-3 / ZeRO-0 model states by the formulas: 16 bytes per parameter, all of them sharded by ZeRO-3."""
    if mixed_precision == "no":
        # fp32: 4 weights + 4 gradients + 8 Adam; DeepSpeed 0.19 uses the fp32 weights as master copy (no clone).
        return 1 / processes, "fp32: 16 B/param vs 16/N"
    return 1 / processes, "mixed precision: 2+2+12 = 16 B/param vs 16/N (ZeRO paper)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--small-buffers", action="store_true", help="hidden-size based DeepSpeed buckets and a cap on live ZeRO-3 parameters")
    parser.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.mixed_precision, Path(args.out), args.small_buffers)
        return
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            started = time.perf_counter()
            results[setting] = launch(setting, args.mixed_precision, Path(tmp), args.small_buffers)
            print(f"# {setting}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    params = next(iter(results.values()))[0]["params"]
    mib = 1024**2
    print(
        f"BART from config, {params / 1e6:.1f}M parameters; 2 CPU processes; mixed_precision={args.mixed_precision}; "
        f"{MICRO_BATCHES} micro-batches, {GRAD_ACCUM} per step; DeepSpeed buffers: {'small' if args.small_buffers else 'DeepSpeed defaults'}"
    )
    print(
        f"{'setting':<15} {'rank':>4} {'model states MiB':>17} {'B/param':>8} {'peak RSS +MiB':>14} {'B/param':>8} "
        f"{'s/micro':>7}   peak RSS +MiB after each phase"
    )
    for setting, ranks in results.items():
        for r in sorted(ranks, key=lambda r: r["rank"]):
            print(
                f"{setting:<15} {r['rank']:>4} {r['model_state_bytes'] / mib:>17,.0f} {r['model_state_bytes'] / params:>8.1f} "
                f"{r['peak_increase_bytes'] / mib:>14,.0f} {r['peak_increase_bytes'] / params:>8.1f} {r['seconds_per_step']:>7.2f}   "
                + " ".join(f"{k}={v / mib:,.0f}" for k, v in r["phase_peaks"].items())
            )
    print("model states = live tensor storages with gradients accumulated and Adam states present (engine buffers included);")
    print("peak RSS + = process peak minus its memory before the model was built (includes transient gathers and freed pages)")
    if "zero3" in results:
        predicted, why = predicted_ratio(args.mixed_precision, 2)
        for measure, key in (("model states", "model_state_bytes"), ("peak RSS", "peak_increase_bytes")):
            zero3 = max(r[key] for r in results["zero3"])
            for reference in ("zero0", "ddp"):
                if reference in results:
                    ratio = zero3 / max(r[key] for r in results[reference])
                    verdict = "meets" if ratio <= 0.6 else "misses"
                    print(f"{measure}: ZeRO-3 / {reference} = {ratio:.2f}  (formula {predicted:.2f}; {why}) - {verdict} the 0.6 target")


if __name__ == "__main__":
    main()
