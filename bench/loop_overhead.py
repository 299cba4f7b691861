"""Step time of the accel_tasks loop versus a bare PyTorch loop on the same model and batches.

Both run in this process, alternating, on the bundled summarization sample and tiny model:
the bare loop is forward, backward, clip, AdamW step, scheduler step; the accel_tasks loop is the
real `loop.run` (Accelerator, accumulate, logging every `--log-every` steps, progress bar), timed
over its training phase only. Prints each round and the median ratio (target <= 1.05).

    python bench/loop_overhead.py [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def accel_tasks_loop(steps: int, log_every: int, workdir: Path, round_index: int) -> float:
    from accel_tasks.loop import run
    from accel_tasks.preflight import make_plan
    from accel_tasks.run import resolve_config

    cfg, recipe_cls = resolve_config(
        [
            "recipe=summarization",
            f"train.max_steps={steps}",
            f"train.log_every={log_every}",
            "train.batch_size=16",
            "data.max_eval_samples=4",
            f"output_dir={workdir / f'run{round_index}'}",
        ],
        None,
    )
    metrics = run(make_plan(cfg, recipe_cls))
    return metrics["train_runtime_s"] / metrics["train_steps"]


def bare_loop(steps: int) -> float:
    """The same model, data, collation, optimizer groups and schedule, with nothing around it."""
    from transformers import get_scheduler

    from accel_tasks.data import make_features
    from accel_tasks.loop import parameter_groups
    from accel_tasks.run import resolve_config

    cfg, recipe_cls = resolve_config(["recipe=summarization", "train.batch_size=16"], None)
    recipe = recipe_cls(cfg)
    torch.manual_seed(cfg.seed)
    model, _ = recipe.load_model()
    raw = recipe.load_data(("train",))
    recipe.required_columns("train", raw["train"].column_names)
    features = make_features(recipe, raw["train"], "train", cfg.data, lambda message: None)
    loader = torch.utils.data.DataLoader(
        features, batch_size=16, shuffle=True, collate_fn=recipe.collate, generator=torch.Generator().manual_seed(0)
    )
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    scheduler = get_scheduler(cfg.train.lr_scheduler, optimizer, num_warmup_steps=0, num_training_steps=steps)
    model.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args(argv)
    from accel_tasks.distributed import configure_threads

    threads = configure_threads(None)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            bare = bare_loop(args.steps)
            ours = accel_tasks_loop(args.steps, args.log_every, Path(tmp), index)
            ratios.append(ours / bare)
            print(f"round {index + 1}: bare {bare * 1000:.1f} ms/step  accel_tasks {ours * 1000:.1f} ms/step  ratio {ours / bare:.3f}", flush=True)
    print(f"threads={threads} steps={args.steps} rounds={args.rounds}")
    print(f"median step-time ratio accel_tasks/bare: {statistics.median(ratios):.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
