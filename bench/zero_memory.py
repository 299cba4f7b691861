"""Memory per process under DeepSpeed ZeRO-3 versus ZeRO-0, measured inside real accel_tasks training runs.

Each side is a plain ``accelerate launch ... -m accel_tasks.run`` training run of the summarization
recipe on the bundled sample data, with the repo's own accelerate configs and the toolkit's defaults:

    zero3: accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml --num_processes 2 \\
               -m accel_tasks.run ...
    zero0: accelerate launch --config_file accelerate_configs/deepspeed_zero1.yaml --num_processes 2 --zero_stage 0 \\
               -m accel_tasks.run ...

(`--zero_stage 0` is what deepspeed_zero1.yaml's header says gives plain DeepSpeed DDP). The model is a
BART built from a config (random weights, ~60M parameters with the default sizes) in a local directory
the script writes, with the bundled sample's tokenizer. The only thing added to the run is the recipe:
``recipe=<tmp>/zero_memory_probe.py:ZeroMemoryProbe``, a subclass of the built-in SummarizationRecipe
whose hooks measure, without changing what the run does:

* load_model: the live tensor storages and the RSS just before the model is built (the baseline);
* training_loss, at the start of micro-batch ``--probe-at`` (default 4: one optimizer step done, so Adam
  states exist, and micro-batch 3's gradients accumulated): every live CPU tensor storage that was not
  there at the baseline (the counting of the earlier bench: touch each parameter's .grad / .ds_tensor,
  gc.collect, dedupe storages by data pointer), each attributed to
    weights     the model's parameters (under ZeRO-3 their partitions, param.ds_tensor),
    gradients   parameters' .grad and DeepSpeed gradient partitions (attributes named *grad*),
    optimizer   the torch AdamW's states and its own parameters (fp32 master copies / partitions),
    buffers     every other tensor that the DeepSpeed engine or optimizer holds (communication buckets),
    other       live tensors not reachable from any of these (e.g. the batch);
  model states = weights + gradients + optimizer, what the ZeRO formulas (16 / 16/N bytes per
  parameter) count; ru_maxrss (peak RSS) so far;
* at exit: ru_maxrss again (the whole run: export and final eval included).

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
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "accelerate_configs"
SAMPLE_MODEL = REPO / "accel_tasks" / "samples" / "summarization" / "model"
PROCESSES = 2
SETTINGS = {
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
# ~60.8M parameters (tied embeddings counted once), as in the earlier version of this bench.
MODEL = dict(
    d_model=512,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=2048,
    vocab_size=32000,
    max_position_embeddings=256,
)

PROBE_RECIPE = r'''"""Summarization recipe that measures this rank's memory (written by bench/zero_memory.py)."""
import atexit
import gc
import json
import os
import resource
from pathlib import Path

import torch

from accel_tasks.recipes.summarization import SummarizationRecipe

OUT = Path(os.environ["ZERO_MEMORY_OUT"])
PROBE_AT = int(os.environ.get("ZERO_MEMORY_PROBE_AT", "4"))


def rss_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def storage_of(tensor):
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, ReferenceError):
        return None


def live_storages(model=None):
    """{data_ptr: nbytes} of every distinct CPU tensor storage reachable from Python (the earlier bench's counting)."""
    if model is not None:
        for param in model.parameters():  # give gradients and ZeRO-3 partitions a Python object gc can see
            _ = param.grad, getattr(param, "ds_tensor", None)
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                found = storage_of(obj)
                if found and found[1]:
                    storages[found[0]] = found[1]
        except (RuntimeError, NotImplementedError, ReferenceError):
            continue
    return storages


def walk(obj, path, out, seen, depth=0):
    """Tensor storages held by a DeepSpeed / accelerate / torch.optim object, with the attribute path to each."""
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        found = storage_of(obj)
        if found and found[1]:
            out.setdefault(found[0], (found[1], path))
        return
    if isinstance(obj, dict):
        items = [(f"{path}[]", v) for v in obj.values()]
        items += [(f"{path}[]", k) for k in obj if isinstance(k, torch.Tensor)]
    elif isinstance(obj, (list, tuple, set)):
        items = [(f"{path}[]", v) for v in obj]
    elif isinstance(obj, torch.nn.Module) and depth > 0:
        return  # the model itself is counted from its parameters
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("deepspeed", "accelerate", "torch"):
        skipped = ("_modules", "_parameters", "_buffers", "module")
        items = [(f"{path}.{k}", v) for k, v in vars(obj).items() if k not in skipped]
    else:
        return
    for sub_path, value in items:
        walk(value, sub_path, out, seen, depth + 1)


def innermost_torch_optimizers(root, found, seen, depth=0):
    if id(root) in seen or depth > 4:
        return
    seen.add(id(root))
    inner = getattr(root, "optimizer", None)
    if (
        isinstance(root, torch.optim.Optimizer)
        and type(root).__module__.startswith("torch.optim")
        and not isinstance(inner, torch.optim.Optimizer)
    ):
        found.append(root)
        return
    if inner is not None:
        innermost_torch_optimizers(inner, found, seen, depth + 1)


class ZeroMemoryProbe(SummarizationRecipe):
    name = "zero_memory_probe"

    def load_model(self):
        self._baseline = set(live_storages())
        self._baseline_rss = rss_bytes()
        self._peak_before = peak_rss_bytes()
        self._calls = 0
        self._result = None
        atexit.register(self._at_exit)
        return super().load_model()

    def training_loss(self, model, batch):
        self._calls += 1
        if self._calls == PROBE_AT:
            self._measure(model)
        return super().training_loss(model, batch)

    def _measure(self, model):
        import warnings

        with warnings.catch_warnings():  # gc.get_objects touches deprecated torch.distributed attributes
            warnings.simplefilter("ignore")
            self._count(model)

    def _count(self, model):
        from accelerate import Accelerator

        accelerator = next(o for o in gc.get_objects() if isinstance(o, Accelerator))
        inner = getattr(model, "module", model)  # DeepSpeedEngine / DDP -> the transformers model
        params = list(inner.parameters())
        live = {p: n for p, n in live_storages(inner).items() if p not in self._baseline}
        category = {}

        def claim(ptr, kind, where=None):
            if ptr in live and ptr not in category:
                category[ptr] = (kind, where)

        for p in params:
            for t in (p.data, getattr(p, "ds_tensor", None)):
                if t is not None and storage_of(t):
                    claim(storage_of(t)[0], "weights")
        for p in params:
            if p.grad is not None and storage_of(p.grad):
                claim(storage_of(p.grad)[0], "gradients", "param.grad")
        torch_optimizers = []
        for opt in accelerator._optimizers:
            innermost_torch_optimizers(opt, torch_optimizers, set())
        for opt in torch_optimizers:
            for key in opt.state:  # ZeRO-3 puts its fp32 partitions into param_groups only during step()
                if isinstance(key, torch.Tensor) and storage_of(key):
                    claim(storage_of(key)[0], "optimizer", "optimizer params (master copy)")
            for state in opt.state.values():
                for t in state.values():
                    if isinstance(t, torch.Tensor) and storage_of(t):
                        claim(storage_of(t)[0], "optimizer", "adam state")
            for group in opt.param_groups:
                for t in group["params"]:
                    if storage_of(t):
                        claim(storage_of(t)[0], "optimizer", "optimizer params (master copy)")
        held, seen = {}, set()
        for opt in accelerator._optimizers:
            walk(opt, "optimizer", held, seen)
        walk(model, "engine", held, seen)
        for ptr, (nbytes, path) in held.items():
            name = path.rsplit(".", 1)[-1].lower()
            claim(ptr, "gradients" if "grad" in name and "norm" not in name else "buffers", path)
        totals = dict.fromkeys(("weights", "gradients", "optimizer", "buffers", "other"), 0)
        where = {}
        for ptr, nbytes in live.items():
            kind, path = category.get(ptr, ("other", None))
            totals[kind] += nbytes
            if path:
                where[f"{kind}: {path}"] = where.get(f"{kind}: {path}", 0) + nbytes
        self._result = {
            "rank": accelerator.process_index,
            "processes": accelerator.num_processes,
            "distributed": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision,
            "zero_stage": int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"])
            if accelerator.state.deepspeed_plugin else None,
            "params": sum(getattr(p, "ds_numel", 0) or p.numel() for p in params),
            "probe_micro_batch": PROBE_AT,
            "bytes": totals,
            "model_state_bytes": totals["weights"] + totals["gradients"] + totals["optimizer"],
            "live_tensor_bytes": sum(live.values()),
            "held_by_path": dict(sorted(where.items(), key=lambda kv: -kv[1])[:12]),
            "baseline_rss": self._baseline_rss,
            "peak_rss_before_model": self._peak_before,
            "peak_rss_at_probe": peak_rss_bytes(),
        }
        self._write()

    def _write(self):
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"rank{self._result['rank']}.json").write_text(json.dumps(self._result, indent=1))

    def _at_exit(self):
        if self._result is not None:
            self._result["peak_rss_run"] = peak_rss_bytes()
            self._write()
'''


def build_model_dir(path: Path) -> Path:
    """A BART config (no weights: accel_tasks builds it with random weights) and the bundled sample's tokenizer."""
    import shutil

    from transformers import BartConfig

    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SAMPLE_MODEL / name, path / name)
    config = BartConfig(
        **MODEL,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        decoder_start_token_id=1,
        forced_bos_token_id=None,
        forced_eos_token_id=1,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    config.save_pretrained(path)
    return path


def run_settings(args: argparse.Namespace) -> list[str]:
    """The key=value overrides both sides get (the plugin recipe has no preset of its own)."""
    return [
        f"train.max_steps={args.steps}",
        "train.batch_size=1",
        "train.grad_accum=2",
        "train.log_every=1",
        "data.max_train_samples=64",
        "data.max_eval_samples=2",
        "eval.batch_size=2",
        "task.max_source_length=16",
        "task.max_target_length=8",
        "generation.num_beams=1",
        "generation.max_new_tokens=4",
        "seed=0",
    ]


def launch(
    setting: str, args: argparse.Namespace, recipe: Path, model_dir: Path, out: Path
) -> tuple[list[dict], float]:
    launcher = list(SETTINGS[setting])
    if args.mixed_precision != "config":
        launcher += ["--mixed_precision", args.mixed_precision]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher,
        "-m",
        "accel_tasks.run",
        f"recipe={recipe}:ZeroMemoryProbe",
        f"model.name_or_path={model_dir}",
        *run_settings(args),
        f"output_dir={out / 'run'}",
    ]
    env = dict(
        os.environ, ZERO_MEMORY_OUT=str(out / "probe"), ZERO_MEMORY_PROBE_AT=str(args.probe_at), PYTHONUNBUFFERED="1"
    )
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)
    seconds = time.perf_counter() - started
    files = sorted((out / "probe").glob("rank*.json"))
    if completed.returncode != 0 or len(files) != PROCESSES:
        sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-6000:])
        raise SystemExit(f"{setting}: run failed with exit {completed.returncode} ({len(files)} probe files)")
    ranks = [json.loads(f.read_text()) for f in files]
    if any("peak_rss_run" not in r for r in ranks):
        raise SystemExit(f"{setting}: a rank did not record its end-of-run peak")
    return ranks, seconds


def worst(ranks: list[dict], key: str) -> float:
    return max(key_value(r, key) for r in ranks)


def key_value(rank: dict, key: str) -> float:
    if key == "peak_rss_increase":
        return rank["peak_rss_run"] - rank["baseline_rss"]
    return rank[key]


def main() -> None:
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
    mib = 1024**2
    with tempfile.TemporaryDirectory(prefix="zero_memory_") as tmp:
        root = Path(tmp)
        recipe = root / "zero_memory_probe.py"
        recipe.write_text(PROBE_RECIPE)
        model_dir = build_model_dir(root / "bart")
        print(f"model: BART from {model_dir.name}/config.json, random weights: {json.dumps(MODEL)}")
        for setting in SETTINGS:
            extra = [] if args.mixed_precision == "config" else ["--mixed_precision", args.mixed_precision]
            launcher_args = " ".join(a.replace(str(REPO) + "/", "") for a in SETTINGS[setting] + extra)
            print(
                f"{setting}: accelerate launch {launcher_args} "
                f"-m accel_tasks.run recipe=<tmp>/zero_memory_probe.py:ZeroMemoryProbe model.name_or_path=<tmp>/bart"
            )
        print(
            f"run settings (both sides): {' '.join(run_settings(args))}; bundled sample data; "
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
        pairs: list[dict[str, list[dict]]] = []
        for index in range(args.pairs):
            order = list(SETTINGS) if index % 2 == 0 else list(SETTINGS)[::-1]
            pair: dict[str, list[dict]] = {}
            for setting in order:
                ranks, seconds = launch(setting, args, recipe, model_dir, root / f"pair{index + 1}" / setting)
                pair[setting] = ranks
                print(f"# pair {index + 1}: {setting} done in {seconds:.0f} s", file=sys.stderr, flush=True)
            pair["order"] = order
            pairs.append(pair)
    params = pairs[0]["zero3"][0]["params"]
    first = pairs[0]
    print(f"\n{params:,} parameters; {PROCESSES} processes; mixed_precision={first['zero3'][0]['mixed_precision']}")
    print(
        f"{'pair':>4} {'setting':<6} {'rank':>4} {'weights':>8} {'grads':>8} {'optim':>8} {'states':>8} {'B/param':>7} "
        f"{'buffers':>8} {'other':>6} {'all live':>9} {'peak@probe':>10} {'peak RSS':>9} {'+ over base':>11}   (MiB)"
    )
    for number, pair in enumerate(pairs, 1):
        for setting in pair["order"]:
            for r in sorted(pair[setting], key=lambda r: r["rank"]):
                b = r["bytes"]
                print(
                    f"{number:>4} {setting:<6} {r['rank']:>4} {b['weights'] / mib:>8.1f} {b['gradients'] / mib:>8.1f} "
                    f"{b['optimizer'] / mib:>8.1f} {r['model_state_bytes'] / mib:>8.1f} "
                    f"{r['model_state_bytes'] / params:>7.2f} "
                    f"{b['buffers'] / mib:>8.1f} {b['other'] / mib:>6.1f} {r['live_tensor_bytes'] / mib:>9.1f} "
                    f"{r['peak_rss_at_probe'] / mib:>10.0f} {r['peak_rss_run'] / mib:>9.0f} "
                    f"{key_value(r, 'peak_rss_increase') / mib:>11.0f}"
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
    for setting in SETTINGS:
        biggest = first[setting][0]["held_by_path"]
        print(
            f"largest holders, {setting} rank 0 (pair 1): "
            + "; ".join(f"{k} {v / mib:.1f}" for k, v in list(biggest.items())[:5])
        )
    measures = [
        ("model-state bytes", "model_state_bytes"),
        ("all live tensor bytes", "live_tensor_bytes"),
        ("peak RSS at probe", "peak_rss_at_probe"),
        ("peak RSS", "peak_rss_run"),
        ("peak RSS over baseline", "peak_rss_increase"),
    ]
    print(f"\nZeRO-3 / ZeRO-0 per process (formula for model states: 1/N = {1 / PROCESSES:.2f})")
    for label, key in measures:
        ratios = [worst(p["zero3"], key) / worst(p["zero0"], key) for p in pairs]
        print(
            f"{label:<24} pairs "
            + ", ".join(f"{r:.3f} ({p['order'][0]} first)" for r, p in zip(ratios, pairs))
            + f"; median {statistics.median(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
