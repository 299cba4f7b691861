"""Step time of the accel_tasks loop versus a bare PyTorch loop on the same model and batches.

Both run in this process on the bundled summarization sample and tiny model, from one run config
(the same overrides on both sides): the bare loop is forward, backward, clip, AdamW step (the run
config's groups, betas and eps), scheduler step (the run config's schedule and warm-up); the accel_tasks
loop is the real `loop.run` (Accelerator, accumulate, logging every `--log-every` steps, progress bar),
timed over its training phase only.

How it is kept fair:
- rounds alternate which side runs first (round 1 bare first, round 2 accel_tasks first, ...);
- same seeds and the same batches: the model is built after seeding with `seed` on both sides, and the
  bare loop shuffles as the toolkit's prepared DataLoader does (accelerate's seedable sampler with
  data_seed=seed: `torch.randperm(n)` from a generator seeded `seed + epoch`; a plain
  `DataLoader(shuffle=True, generator=manual_seed(seed))` gives another order). Every batch's input_ids
  are recorded on both sides and compared after each round; the check is printed, and a mismatch stops
  the benchmark;
- both sides time the same number of steps once per round, the per-round ratios and their median are
  printed.

    OMP_NUM_THREADS=1 python bench/loop_overhead.py [--steps 60] [--rounds 4]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def overrides(steps: int, log_every: int, output_dir: Path) -> list[str]:
    """One run config for both sides."""
    return [
        "recipe=summarization",
        f"train.max_steps={steps}",
        f"train.log_every={log_every}",
        "train.batch_size=16",
        "data.max_eval_samples=4",
        f"output_dir={output_dir}",
    ]


def record_batches(recipe: Any, seen: list) -> None:
    """Wrap the recipe's training_loss (called once per micro-batch on both sides) to keep each batch's input_ids."""
    original = recipe.training_loss

    def training_loss(model: Any, batch: Any) -> Any:
        seen.append(batch["input_ids"])
        return original(model, batch)

    recipe.training_loss = training_loss


def accel_tasks_loop(steps: int, log_every: int, workdir: Path, round_index: int, seen: list) -> float:
    from accel_tasks.preflight import make_plan, resolve_config
    from accel_tasks.training.loop import run

    cfg, recipe_cls = resolve_config(overrides(steps, log_every, workdir / f"run{round_index}"), None)
    plan = make_plan(cfg, recipe_cls)
    record_batches(plan.recipe, seen)
    metrics = run(plan)
    assert metrics["train_steps"] == steps, metrics
    return metrics["train_runtime_s"] / metrics["train_steps"]


class EpochShuffle(torch.utils.data.Sampler):
    """A fresh permutation each epoch from a generator seeded `seed + epoch`: accelerate's seedable sampler order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.n, generator=generator).tolist())


def bare_loop(steps: int, log_every: int, workdir: Path, round_index: int, seen: list) -> float:
    """The same model, data, collation, optimizer groups and schedule, with nothing around it."""
    from transformers import get_scheduler, set_seed

    from accel_tasks.engines.accelerator import configure_threads
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config
    from accel_tasks.training.session import parameter_groups

    cfg, recipe_cls = resolve_config(overrides(steps, log_every, workdir / f"bare{round_index}"), None)
    tcfg = cfg.train
    configure_threads(tcfg.threads)  # as loop.run does
    recipe = recipe_cls(cfg)
    record_batches(recipe, seen)
    set_seed(cfg.seed)
    model, _ = recipe.load_model()
    raw = recipe.load_data(("train",))["train"]
    recipe.required_columns("train", raw.column_names)
    raw = recipe.prepare_raw(raw, "train")
    features = make_features(recipe, raw, "train", cfg.data)
    loader = torch.utils.data.DataLoader(
        features,
        batch_size=tcfg.batch_size,
        sampler=EpochShuffle(len(features), cfg.seed),
        collate_fn=recipe.collate,
        num_workers=cfg.data.dataloader_num_workers,
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, tcfg.weight_decay),
        lr=tcfg.lr,
        betas=(tcfg.adam_beta1, tcfg.adam_beta2),
        eps=tcfg.adam_epsilon,
        fused=True,  # the fast kernel on CPU, as the loop builds it: the bench compares loops, not AdamW kernels
    )
    warmup = tcfg.warmup_steps or math.ceil(tcfg.warmup_ratio * steps)
    scheduler = get_scheduler(tcfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    model.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for batch in loader:
            loss = recipe.training_loss(model, batch)
            loss.backward()
            if tcfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - start) / steps


def batch_digest(batches: list) -> list[str]:
    return [
        hashlib.sha1(b.contiguous().numpy().tobytes() + str(tuple(b.shape)).encode()).hexdigest()[:12] for b in batches
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=4, help="pairs; each side runs first in half of them (>= 3)")
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    from accel_tasks.engines.accelerator import configure_threads

    threads = configure_threads(None)
    sides = {"bare": bare_loop, "accel_tasks": accel_tasks_loop}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            order = ["bare", "accel_tasks"] if index % 2 == 0 else ["accel_tasks", "bare"]
            times, seen = {}, {}
            for side in order:
                seen[side] = []
                times[side] = sides[side](args.steps, args.log_every, Path(tmp), index, seen[side])
            digests = {side: batch_digest(batches) for side, batches in seen.items()}
            if digests["bare"] != digests["accel_tasks"]:
                first = (
                    next(i for i, (a, b) in enumerate(zip(digests["bare"], digests["accel_tasks"])) if a != b)
                    if len(digests["bare"]) == len(digests["accel_tasks"])
                    else "lengths differ"
                )
                sys.exit(
                    f"round {index + 1}: the two sides saw different batches (first difference: batch {first}); "
                    "the comparison would not be like for like"
                )
            order_hash = hashlib.sha1("".join(digests["bare"]).encode()).hexdigest()[:12]
            ratio = times["accel_tasks"] / times["bare"]
            ratios.append(ratio)
            print(
                f"round {index + 1} ({order[0]} first): bare {times['bare'] * 1000:.1f} ms/step  "
                f"accel_tasks {times['accel_tasks'] * 1000:.1f} ms/step  ratio {ratio:.3f}  "
                f"| same {len(digests['bare'])} "
                f"batches on both sides (first input_ids sha1 {digests['bare'][0]}, batch-order sha1 {order_hash})",
                flush=True,
            )
    print(f"threads={threads} steps={args.steps} rounds={args.rounds} (alternating first side)")
    print(f"per-round ratios accel_tasks/bare: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(
        f"median step-time ratio accel_tasks/bare: {statistics.median(ratios):.3f} "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
