"""train.group_by_length on and off, side by side on the same data: padding fraction and tokens/s.

Padding fraction: the share of padded positions in the training batches of one epoch when each batch is
padded to its longest row (dynamic padding, what the collator does), for the source ids and the labels,
computed from the run's own features and batch orders (a seeded shuffle; LengthGroupedSampler).
Tokens/s: real (non-pad) source tokens per second of training, from the loop's own log line, through the
real CLI in fresh processes, alternating off/on (pair 1 off first, pair 2 on first, ...) with the same
seed, data and steps. The last line reads ``median ratios: tokens_per_s=X padding_off=P padding_on=Q``.

    OMP_NUM_THREADS=1 python bench/group_by_length.py                 # summarization's bundled model, 3 pairs
    python bench/group_by_length.py --pairs 5 --steps 150 -- task.max_source_length=256
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TOKENS_LINE = re.compile(r"step (\d+)/(\d+) loss \S+ lr \S+ \S+ samples/s (\d+) tokens/s")


def epoch_padding(overrides: list[str], batch_size: int, seed: int) -> dict[str, tuple[float, float]]:
    """{off|on: (source padding, label padding)} over one epoch of the run's training features."""
    import torch

    from accel_tasks.data.sampling import feature_lengths, length_grouped_indices, padding_fraction
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(overrides, None)
    recipe = recipe_cls(cfg)
    recipe.load_model()
    raw = recipe.load_data(("train",))
    recipe.required_columns("train", raw["train"].column_names)  # the loop's order: columns are resolved here
    train = recipe.prepare_raw(raw["train"], "train")
    features = make_features(recipe, train, "train", cfg.data)
    sources = feature_lengths(features, "input_ids").tolist()
    labels = feature_lengths(features, "labels").tolist()
    orders = {
        "off": torch.randperm(len(sources), generator=torch.Generator().manual_seed(seed)).tolist(),
        "on": length_grouped_indices(sources, batch_size, seed),
    }
    result = {}
    for name, order in orders.items():
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        result[name] = (padding_fraction(sources, batches), padding_fraction(labels, batches))
    return result


def tokens_per_s(overrides: list[str], work: Path, steps: int) -> float:
    command = [
        sys.executable,
        "-m",
        "accel_tasks.run",
        *overrides,
        f"train.max_steps={steps}",
        f"train.log_every={steps}",
        "train.report_to=[none]",
        "data.max_eval_samples=4",
        "generation.max_new_tokens=4",
        f"output_dir={work}",
        "train.overwrite_output_dir=true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    matches = [m for m in TOKENS_LINE.finditer(out.stdout) if int(m.group(1)) == steps]
    return float(matches[-1].group(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="summarization")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("overrides", nargs="*", help="extra key=value settings for both variants")
    args = parser.parse_args()
    base = [f"recipe={args.recipe}", *args.overrides]
    from accel_tasks.preflight import resolve_config

    cfg, _ = resolve_config(base, None)
    padding = epoch_padding(base, cfg.train.batch_size, cfg.seed)
    print(
        f"data: recipe={args.recipe} {' '.join(args.overrides) or '(its offline default)'}; "
        f"batch {cfg.train.batch_size}, seed {cfg.seed}"
    )
    for name, (source, label) in padding.items():
        print(f"padding fraction, group_by_length={name:<3}: source ids {source:.3f}  labels {label:.3f}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            measured = {}
            for name in ("off", "on") if pair % 2 == 0 else ("on", "off"):
                flag = "true" if name == "on" else "false"
                measured[name] = tokens_per_s([*base, f"train.group_by_length={flag}"], Path(tmp) / name, args.steps)
            ratios.append(measured["on"] / measured["off"])
            print(
                f"pair {pair + 1}: tokens/s off {measured['off']:.0f}  on {measured['on']:.0f}  on/off {ratios[-1]:.3f}"
            )
    print(
        f"median ratios: tokens_per_s={statistics.median(ratios):.3f} "
        f"padding_off={padding['off'][0]:.3f} padding_on={padding['on'][0]:.3f}"
    )


if __name__ == "__main__":
    main()
