"""Speech data pipeline: clips/s of audio decoding + feature extraction, cold versus warm cache, and the
share of a training step spent waiting for data.

Everything runs in this process through the speech recipe's own hooks on the bundled sample (or
``--model`` / ``--train-file``): ``load_data`` -> ``prepare_raw`` (header checks, duration filter) ->
``make_features`` (soundfile decode, soxr resampling, the feature extractor; cached by datasets).

* cold: a fresh datasets cache folder, so every clip is decoded and featurised;
* warm: the same call again, which loads the cached features;
* data wait: a training loop (forward, backward, clip, AdamW) over a DataLoader with the recipe's
  collator and ``data.dataloader_num_workers`` (default 0, the run config's default), timing how long
  each ``next(batch)`` blocks versus the whole step. Target: waiting < 10% of step time.

    OMP_NUM_THREADS=1 python bench/audio_pipeline.py [--steps 40] [--workers N] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_recipe(extra: list[str]):
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(["recipe=speech_recognition", *extra], None)
    recipe = recipe_cls(cfg)
    recipe.validate_options()
    recipe.load_model()
    return cfg, recipe


def featurise(recipe, cfg, split: str = "train") -> tuple[object, float, float, int]:
    """(features, seconds in prepare_raw, seconds in make_features, clips) for one split."""
    from accel_tasks.features.cache import make_features

    raw = recipe.load_data((split,))[split]
    recipe.required_columns(split, raw.column_names)
    start = time.perf_counter()
    raw = recipe.prepare_raw(raw, split)
    checked = time.perf_counter()
    features = make_features(recipe, raw, split, cfg.data)
    done = time.perf_counter()
    return features, checked - start, done - checked, len(raw)


def breakdown(recipe, clips: int = 200) -> tuple[float, float]:
    """(decode clips/s, feature-extraction clips/s) measured separately on the first ``clips`` train clips."""
    from accel_tasks.recipes.speech.audio import load_audio

    raw = recipe.load_data(("train",))["train"]
    recipe.required_columns("train", raw.column_names)
    raw = raw.select(range(min(clips, len(raw))))
    extractor = recipe._feature_extractor()
    rate = int(extractor.sampling_rate)
    base = recipe.audio_base_dir("train")
    start = time.perf_counter()
    audio = [load_audio(value, rate, base_dir=base) for value in raw[recipe.columns(raw[:8]).audio]]
    decoded = time.perf_counter()
    for clip in audio:
        extractor(clip, sampling_rate=rate)
    done = time.perf_counter()
    return len(audio) / (decoded - start), len(audio) / (done - decoded)


def data_wait(recipe, cfg, features, steps: int, workers: int) -> tuple[float, float, float]:
    """(median step s, mean wait s, wait fraction) over ``steps`` optimizer steps after 3 warm-up steps."""
    import torch
    from torch.utils.data import DataLoader

    from accel_tasks.training.session import parameter_groups

    model = recipe.model
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    loader = DataLoader(
        features,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        collate_fn=recipe.collate,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
    )
    waits, totals = [], []
    iterator = iter(loader)
    warmup = 3
    for index in range(steps + warmup):
        begin = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        fetched = time.perf_counter()
        loss = recipe.training_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        end = time.perf_counter()
        if index >= warmup:
            waits.append(fetched - begin)
            totals.append(end - begin)
    return statistics.median(totals), sum(waits) / len(waits), sum(waits) / sum(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: data.dataloader_num_workers)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("overrides", nargs="*", help="run-config key=value settings, e.g. model.name_or_path=DIR")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HF_DATASETS_CACHE"] = cache
        import datasets

        datasets.config.HF_DATASETS_CACHE = Path(cache)
        datasets.disable_progress_bars()
        cfg, recipe = build_recipe(args.overrides)
        _, probe_cold, cold_s, clips = featurise(recipe, cfg)
        features, probe_warm, warm_s, _ = featurise(recipe, cfg)
        workers = cfg.data.dataloader_num_workers if args.workers is None else args.workers
        step_s, wait_s, fraction = data_wait(recipe, cfg, features, args.steps, workers)
        decode_rate, extract_rate = breakdown(recipe)

    print(
        f"clips: {clips} (train split), model family: {recipe.model_type}, feature extractor: "
        f"{type(recipe._feature_extractor()).__name__}, torch threads: {args.threads}"
    )
    print(f"{'':28}{'cold cache':>14}{'warm cache':>14}{'ratio':>9}")
    print(
        f"{'header checks (clips/s)':28}{clips / probe_cold:>14.0f}{clips / probe_warm:>14.0f}"
        f"{probe_cold / probe_warm:>8.1f}x"
    )
    print(f"{'decode+features (clips/s)':28}{clips / cold_s:>14.1f}{clips / warm_s:>14.0f}{cold_s / warm_s:>8.1f}x")
    print(
        f"{'whole pipeline (clips/s)':28}{clips / (probe_cold + cold_s):>14.1f}{clips / (probe_warm + warm_s):>14.0f}"
        f"{(probe_cold + cold_s) / (probe_warm + warm_s):>8.1f}x"
    )
    print(
        f"  of which: soundfile decode (+ resampling) {decode_rate:.0f} clips/s, "
        f"feature extractor {extract_rate:.0f} clips/s"
    )
    print(
        f"training step (batch {cfg.train.batch_size}, {workers} DataLoader workers): median {1000 * step_s:.0f} ms, "
        f"waiting on data {1000 * wait_s:.1f} ms = {100 * fraction:.1f}% of step time (target < 10%)"
    )
    return 0 if fraction < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
