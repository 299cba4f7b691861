"""What the checkpoint manifest and the output_dir lock cost, next to the save they protect.

Per pair, in alternating order: one full ``save_checkpoint`` of the bundled summarization model (accelerate
state: weights, AdamW moments, RNG, plus config/processor/loop state and the manifest), and the integrity
work alone on that same checkpoint (writing its manifest, verifying it as ``resume_from=latest`` does, and
taking + releasing the lock). Prints per-pair times and the median ratio integrity / save.

    python bench/checkpoint_integrity.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("ACCEL_TASKS_NUM_THREADS", "1")

    import torch
    from accelerate import Accelerator

    from accel_tasks.config import to_yaml
    from accel_tasks.manifest import manifest_problem, write_manifest
    from accel_tasks.preflight import resolve_config
    from accel_tasks.runs.checkpoint import LoopState, save_checkpoint
    from accel_tasks.runs.output_dir import acquire_lock, release_lock

    cfg, recipe_cls = resolve_config(["recipe=summarization"], None)
    model, processor = recipe_cls(cfg).load_model()
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    batch = processor(["a short document"], text_target=["a summary"], return_tensors="pt")
    model(**batch).loss.backward()
    optimizer.step()  # AdamW state exists, as in any real checkpoint
    run_config = to_yaml(cfg)
    work = Path(tempfile.mkdtemp(prefix="ckpt_bench_"))
    saves, checks = [], []
    try:
        for pair in range(args.pairs):
            order = ("save", "integrity") if pair % 2 == 0 else ("integrity", "save")
            for side in order:
                root = work / f"pair{pair}" / "checkpoints"
                if side == "save":
                    start = time.perf_counter()
                    save_checkpoint(accelerator, root, LoopState(global_step=pair + 1), model, processor, run_config)
                    saves.append(time.perf_counter() - start)
                else:
                    target = work / "integrity" / f"step_{pair + 1}"
                    if not target.exists():
                        # The same files a checkpoint holds, so the manifest lists and checks real sizes.
                        save_checkpoint(
                            accelerator,
                            work / "integrity",
                            LoopState(global_step=pair + 1),
                            model,
                            processor,
                            run_config,
                        )
                    out = work / f"lock{pair}"
                    start = time.perf_counter()
                    write_manifest(target, kind="checkpoint", step=pair + 1)
                    assert manifest_problem(target) is None
                    acquire_lock(out)
                    release_lock(out, os.getpid())
                    checks.append(time.perf_counter() - start)
            print(
                f"pair {pair + 1} ({order[0]} first): save {saves[-1] * 1000:.1f} ms, "
                f"manifest+verify+lock {checks[-1] * 1000:.2f} ms, "
                f"ratio {checks[-1] / saves[-1]:.4f}"
            )
        size = sum(p.stat().st_size for p in (work / "pair0" / "checkpoints" / "step_1").rglob("*") if p.is_file())
        files = sum(1 for p in (work / "pair0" / "checkpoints" / "step_1").rglob("*") if p.is_file())
        print(f"checkpoint: {files} files, {size / 2**20:.1f} MiB")
        ratios = [c / s for c, s in zip(checks, saves)]
        print(
            f"median: save {statistics.median(saves) * 1000:.1f} ms, "
            f"integrity {statistics.median(checks) * 1000:.2f} ms, "
            f"ratio integrity/save {statistics.median(ratios):.4f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
