"""accel_tasks against transformers' Seq2SeqTrainer on the same work: train + eval wall time, eval generation speed,
memory, ROUGE.

Both systems train the same model (the bundled tiny summarization Marian, built from its config with the
same seed, so the same initial weights; Marian's sinusoidal position table frozen on both sides, as
accel_tasks does) on the same data, for the same optimizer steps, batch size, learning rate, warm-up,
schedule, weight decay and clipping, then export the model and generate on the validation split with the same
settings (greedy unless --num-beams, max_new_tokens), in a fresh process each:

- **A, accel_tasks**: the real CLI, ``python -m accel_tasks.run recipe=summarization ...`` with its fast
  settings: ``train.group_by_length=true`` (length-grouped training batches), ``eval.max_tokens_per_batch``
  (length-sorted eval batches under a token budget; default: eval batch size x max source length, the
  padded size of the Trainer's largest possible batch) and its greedy decoding that drops finished rows.
- **B, Seq2SeqTrainer**: a plain Trainer script (below, ``trainer_main``) with the Trainer's own fast
  settings: ``train_sampling_strategy="group_by_length"`` (transformers 5's group_by_length, which also
  length-groups the eval batches), its default fused AdamW, ``predict_with_generate``, no eval or checkpoint
  during training, no tracker, no progress bar; ``save_model`` at the end (accel_tasks exports its model too)
  and ``trainer.predict`` for the generation, with ``compute_metrics`` decoding and scoring as accel_tasks does.
  (Its predictions come back in its length-grouped eval order; the script puts them back in input order.)

The runs alternate A B A B ... (``--pairs``, default 3). Per pair and as the median over pairs:
train_eval_wall (whole process, command to exit, imports included), eval_gen_throughput (eval examples/s of
the final generation pass: generate + decode + ROUGE; accel_tasks' ``eval_runtime_s``, the Trainer's
``predict`` timed around the call, with the share of it spent in ``generate``), peak RSS (the process's
ru_maxrss), and ROUGE-1 / ROUGE-L of each, scored the same way on both sides (the package's rouge module on the
raw reference texts, stemmed, one sentence per line, as the summarization recipe scores). Ratios are
accel_tasks / Trainer; rougeL_delta is accel_tasks minus Trainer in ROUGE points (0-100). The last line reads
``median ratios: train_eval_wall=X eval_gen_throughput=Y rougeL_delta=Z``.

    OMP_NUM_THREADS=1 ACCEL_TASKS_NUM_THREADS=1 python bench/vs_hf_trainer.py               # 300 steps, 3 pairs
    python bench/vs_hf_trainer.py --pairs 5 --steps 600 --eval-rows 300
    python bench/vs_hf_trainer.py --eval-rows 300 --ablation 5    # then: which eval speed-up pays
    python bench/vs_hf_trainer.py --pairs 1 --steps 2 --max-train-samples 64 --eval-rows 6  # a smoke run

``--eval-rows N`` scores N validation rows; beyond the bundled 100 it adds rotations of the validation
documents (each sentence in turn first, so it is the summary), lengths as the originals'.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "accel_tasks" / "samples" / "summarization"
MARKER = "VS_TRAINER_RESULT "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


# -- data -----------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def eval_rows(validation: list[dict], count: int) -> list[dict]:
    """``count`` rows: the validation rows, then rotations of their documents (sentence k first = the summary)."""
    if count <= len(validation):
        return validation[:count]
    rows = list(validation)
    rotation = 1
    while len(rows) < count:
        added = False
        for row in validation:
            sentences = [s for s in _SENTENCE_END.split(row["document"].strip()) if s]
            if rotation < len(sentences):
                turned = sentences[rotation:] + sentences[:rotation]
                rows.append({"id": f"{row['id']}-r{rotation}", "document": " ".join(turned), "summary": turned[0]})
                added = True
                if len(rows) == count:
                    break
        if not added:
            raise SystemExit(f"--eval-rows {count}: only {len(rows)} rows can be made from the validation documents")
        rotation += 1
    return rows


# -- the Trainer side (runs in its own process) ----------------------------------------------------------


def trainer_main(settings: dict[str, Any]) -> None:
    """A Seq2SeqTrainer fine-tuning script: same model, data, steps and generation as the accel_tasks run."""
    start = time.perf_counter()
    import numpy as np
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoConfig,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        GenerationConfig,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        set_seed,
    )

    from accel_tasks.metrics import load_metric

    torch.set_num_threads(settings["threads"])
    out = Path(settings["output_dir"])
    set_seed(settings["seed"])
    tokenizer = AutoTokenizer.from_pretrained(settings["model_dir"])
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(settings["model_dir"]))
    # The same trainable parameters as accel_tasks: what save_pretrained leaves out is rebuilt on load, not learned.
    for name, param in model.named_parameters():
        if name in set(getattr(model, "_keys_to_ignore_on_save", None) or ()):
            param.requires_grad_(False)
    if (Path(settings["model_dir"]) / "generation_config.json").is_file():  # as accel_tasks builds it
        model.generation_config = GenerationConfig.from_pretrained(settings["model_dir"])
    model.generation_config.num_beams = settings["num_beams"]
    model.generation_config.max_new_tokens = settings["max_new_tokens"]
    data = load_dataset("json", data_files={"train": settings["train_file"], "validation": settings["validation_file"]})
    if settings["max_train_samples"]:
        data["train"] = data["train"].select(range(min(settings["max_train_samples"], len(data["train"]))))

    def preprocess(batch: dict) -> dict:
        features = tokenizer(batch["document"], max_length=settings["max_source_length"], truncation=True)
        features["labels"] = tokenizer(
            text_target=batch["summary"], max_length=settings["max_target_length"], truncation=True
        )["input_ids"]
        return features

    columns = data["train"].column_names
    train = data["train"].map(preprocess, batched=True, remove_columns=columns)
    validation = data["validation"].map(preprocess, batched=True, remove_columns=columns)
    rouge = load_metric("rouge")

    def decode(ids: np.ndarray) -> list[str]:
        ids = np.where(ids < 0, tokenizer.pad_token_id, ids)
        return [text.strip() for text in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]

    def compute_metrics(prediction: Any) -> dict:
        predictions, labels = decode(prediction.predictions), decode(prediction.label_ids)
        scores = rouge.compute(
            predictions=[split_sentences(p) for p in predictions],
            references=[split_sentences(r) for r in labels],
            use_stemmer=True,
        )
        return {key: float(value) for key, value in scores.items()}

    args = Seq2SeqTrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=settings["eval_batch_size"],
        learning_rate=settings["lr"],
        weight_decay=0.0,
        warmup_steps=settings["warmup_steps"],
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=settings["seed"],
        train_sampling_strategy="group_by_length",
        predict_with_generate=True,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    print("[trainer] settings: " + ", ".join(f"{k}={getattr(args, k)}" for k in TRAINER_SHOWN), flush=True)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    train_start = time.perf_counter()
    trained = trainer.train()
    train_s = time.perf_counter() - train_start
    trainer.save_model(str(out / "model"))
    # How much of predict is generate (the rest: a loss forward on every batch, padding, gathering, the metric).
    generate_s = [0.0]
    plain_generate = model.generate

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return plain_generate(*args, **kwargs)
        finally:
            generate_s[0] += time.perf_counter() - start

    model.generate = timed_generate
    predict_start = time.perf_counter()
    predicted = trainer.predict(validation, max_new_tokens=settings["max_new_tokens"], num_beams=settings["num_beams"])
    predict_s = time.perf_counter() - predict_start
    model.generate = plain_generate
    texts = decode(predicted.predictions)
    raw = data["validation"]
    order = input_positions(predicted.label_ids, validation["labels"], tokenizer.pad_token_id)
    write_jsonl(
        out / "predictions.jsonl",
        [
            {"id": raw[i]["id"], "prediction": text, "reference": raw[i]["summary"]}
            for i, text in sorted(zip(order, texts))
        ],
    )
    # Scored as accel_tasks' summarization recipe scores: raw reference texts (compute_metrics above had only
    # the tokenized labels, cut to max_target_length), one sentence per line, stemmed, the package's module.
    records = read_jsonl(out / "predictions.jsonl")
    final = rouge.compute(
        predictions=[split_sentences(r["prediction"]) for r in records],
        references=[split_sentences(r["reference"]) for r in records],
        use_stemmer=True,
    )
    (out / "metrics.json").write_text(
        json.dumps(
            {**predicted.metrics, "train_loss": trained.training_loss, **{k: float(v) for k, v in final.items()}},
            indent=2,
        )
    )
    print(
        MARKER
        + json.dumps(
            {
                "train_s": train_s,
                "eval_s": predict_s,
                "generate_s": generate_s[0],
                "eval_samples": len(validation),
                "in_process_s": time.perf_counter() - start,
            }
        ),
        flush=True,
    )


def input_positions(label_ids: Any, labels: list[list[int]], pad_id: int) -> list[int]:
    """The validation row of each predicted row, found by its labels.

    Why: with ``train_sampling_strategy="group_by_length"`` transformers 5 length-groups the eval batches too,
    with a shuffled sampler, and ``predict`` returns the rows in that order, not the data set's. The labels come
    back beside the predictions in the same order; identical labels are interchangeable (same reference).
    """
    rows: dict[tuple, list[int]] = {}
    for i, label in enumerate(labels):
        rows.setdefault(tuple(t for t in label if t != pad_id), []).append(i)
    positions = []
    for label in label_ids:
        key = tuple(int(t) for t in label if t >= 0 and t != pad_id)
        if not rows.get(key):
            raise SystemExit("[trainer] a predicted row's labels match no validation row")
        positions.append(rows[key].pop(0))
    return positions


TRAINER_SHOWN = (
    "train_sampling_strategy",
    "optim",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "learning_rate",
    "warmup_steps",
    "lr_scheduler_type",
    "weight_decay",
    "max_grad_norm",
    "predict_with_generate",
    "eval_strategy",
    "save_strategy",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "report_to",
    "disable_tqdm",
    "use_cpu",
)


def split_sentences(text: str) -> str:
    """One sentence per line, as the summarization recipe gives ROUGE-Lsum (accel_tasks.recipes.summarization)."""
    return "\n".join(s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip())


# -- running one side ---------------------------------------------------------------------------------


def accel_command(settings: dict[str, Any], out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accel_tasks.run",
        "recipe=summarization",
        f"output_dir={out}",
        f"model.name_or_path={settings['model_dir']}",
        f"data.train_file={settings['train_file']}",
        f"data.validation_file={settings['validation_file']}",
        f"seed={settings['seed']}",
        f"train.max_steps={settings['steps']}",
        f"train.batch_size={settings['batch_size']}",
        f"train.lr={settings['lr']}",
        f"train.warmup_steps={settings['warmup_steps']}",
        "train.weight_decay=0.0",
        "train.lr_scheduler=linear",
        "train.max_grad_norm=1.0",
        f"train.threads={settings['threads']}",
        "train.eval_at_start=false",
        "train.eval_every=0",
        "train.save_every=0",
        "train.log_every=50",
        "train.report_to=[none]",
        "train.group_by_length=true",
        f"eval.batch_size={settings['eval_batch_size']}",
        f"eval.max_tokens_per_batch={settings['max_tokens_per_batch']}",
        "eval.metrics=[rouge]",
        f"task.max_source_length={settings['max_source_length']}",
        f"task.max_target_length={settings['max_target_length']}",
        f"generation.num_beams={settings['num_beams']}",
        f"generation.max_new_tokens={settings['max_new_tokens']}",
        *([f"data.max_train_samples={settings['max_train_samples']}"] if settings["max_train_samples"] else []),
    ]


def run_process(command: list[str], log_path: Path, env: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, exit status, peak RSS bytes) of one fresh process, its output in ``log_path``."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, proc.returncode, usage.ru_maxrss * 1024


def run_side(name: str, settings: dict[str, Any], out: Path, env: dict[str, str]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if name == "accel_tasks":
        command = accel_command(settings, out)
    else:
        (out / "settings.json").write_text(json.dumps({**settings, "output_dir": str(out)}))
        command = [sys.executable, str(Path(__file__).resolve()), "--trainer-child", str(out / "settings.json")]
    log_path = out.parent / f"{out.name}.log"
    wall, status, rss = run_process(command, log_path, env)
    text = log_path.read_text(errors="replace")
    if status != 0:
        sys.exit(f"[bench] {name} failed (exit {status}); {log_path}:\n{text[-4000:]}")
    extra: dict[str, float] = {}
    if name == "accel_tasks":
        metrics = json.loads((out / "metrics.json").read_text())
        eval_s, samples = metrics["eval_runtime_s"], metrics["eval_samples"]
    else:
        result = json.loads(next(line for line in text.splitlines() if line.startswith(MARKER))[len(MARKER) :])
        eval_s, samples = result["eval_s"], result["eval_samples"]
        extra = {"generate_s": result["generate_s"]}
    # Both sides scored with the package's rouge module on the raw references (see trainer_main), in metrics.json.
    final = json.loads((out / "metrics.json").read_text())
    rouge = {"rouge1": 100 * float(final["rouge1"]), "rougeL": 100 * float(final["rougeL"])}
    return {
        "wall_s": wall,
        "eval_s": eval_s,
        "eval_samples": samples,
        "eval_per_s": samples / eval_s,
        "rss": rss,
        **rouge,
        **extra,
        "log": text,
    }


# (label, eval.max_tokens_per_batch, eval.group_by_length, finished rows dropped)
ABLATION = (
    ("fixed batches, input order, plain generate", None, False, False),
    ("fixed batches, length-sorted, plain generate", None, True, False),
    ("fixed batches, length-sorted, rows dropped", None, True, True),
    ("token budget, plain generate", "budget", True, False),
    ("token budget, rows dropped (the bench's A)", "budget", True, True),
)


def ablation_main(settings: dict[str, Any], model_dir: str, repeats: int) -> None:
    """Which of accel_tasks' eval speed-ups pays: its own eval pass (``run_eval``) on one exported model, in one
    process, each variant ``repeats`` times in turn; the medians, and whether every variant predicts the same."""
    import accel_tasks.decoding as decoding
    from accel_tasks.data.raw import check_columns
    from accel_tasks.engines.accelerator import build_accelerator, configure_threads
    from accel_tasks.evaluation.eval_pass import run_eval
    from accel_tasks.features.cache import make_features
    from accel_tasks.preflight import resolve_config

    cfg, recipe_cls = resolve_config(
        [
            "recipe=summarization",
            "mode=eval",
            f"model.name_or_path={model_dir}",
            f"data.validation_file={settings['validation_file']}",
            f"train.threads={settings['threads']}",
            f"eval.batch_size={settings['eval_batch_size']}",
            f"generation.num_beams={settings['num_beams']}",
            f"generation.max_new_tokens={settings['max_new_tokens']}",
        ],
        None,
    )
    configure_threads(cfg.train.threads)
    accelerator = build_accelerator(cfg, Path(settings["output_dir"]))
    recipe = recipe_cls(cfg)
    recipe.validate_options()
    model, _ = recipe.load_model()
    raw = recipe.load_data(("validation",))["validation"]
    check_columns(raw, recipe.required_columns("validation", raw.column_names), "validation")
    raw = recipe.prepare_raw(raw, "validation")
    features = make_features(recipe, raw, "validation", cfg.data)
    model = accelerator.prepare(model)
    applies = decoding.compaction_applies
    times: dict[str, list[float]] = {label: [] for label, *_ in ABLATION}
    predictions: dict[str, list[str]] = {}
    run_eval(accelerator, recipe, model, raw, features, {}, cfg)  # warm-up, not timed
    for _ in range(repeats):
        for label, budget, grouped, dropped in ABLATION:
            cfg.eval.max_tokens_per_batch = settings["max_tokens_per_batch"] if budget else None
            cfg.eval.group_by_length = grouped
            decoding.compaction_applies = applies if dropped else (lambda *args, **kwargs: False)
            start = time.perf_counter()
            _, result = run_eval(accelerator, recipe, model, raw, features, {}, cfg)
            times[label].append(time.perf_counter() - start)
            predictions[label] = result.predictions
    base = statistics.median(times[ABLATION[0][0]])
    print(
        f"[ablation] accel_tasks' eval pass on {model_dir}: {len(features)} rows, median of {repeats}, "
        "speed-up over the first line"
    )
    for label, *_ in ABLATION:
        t = statistics.median(times[label])
        same = "same predictions" if predictions[label] == predictions[ABLATION[0][0]] else "PREDICTIONS DIFFER"
        print(f"[ablation] {label:<46} {t:6.2f} s  {len(features) / t:6.1f} ex/s  {base / t:5.2f}x  {same}", flush=True)


def _generate_share(result: dict[str, Any]) -> str:
    return f", generate {result['generate_s']:.2f} s of it" if "generate_s" in result else ""


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainer-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pairs", type=int, default=3, help="A B pairs, alternating A B A B (3 or more for a measurement)"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=50,
        help="Trainer's per_device_eval_batch_size (and accel_tasks' eval.batch_size)",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        type=int,
        help="accel_tasks' eval.max_tokens_per_batch (default: eval batch size x max source length)",
    )
    parser.add_argument("--max-source-length", type=int, default=128)
    parser.add_argument("--max-target-length", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--max-train-samples", type=int, default=0, help="0: all 3,000 train rows")
    parser.add_argument(
        "--eval-rows", type=int, default=0, help="0: the 100 bundled validation rows; more adds rotated documents"
    )
    parser.add_argument("--train-file", type=Path, default=SAMPLE / "train.jsonl")
    parser.add_argument("--validation-file", type=Path, default=SAMPLE / "validation.jsonl")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=SAMPLE / "model",
        help="a model config + tokenizer folder (built with random weights)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, help="keep the runs' folders and logs here")
    parser.add_argument(
        "--ablation",
        type=int,
        default=0,
        metavar="R",
        help="then time accel_tasks' eval variants (order, budget, rows dropped) R times each on pair 1's model",
    )
    parser.add_argument("--ablation-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trainer_child:
        trainer_main(json.loads(args.trainer_child.read_text()))
        return 0
    if args.ablation_child:
        ablation_main(json.loads(Path(args.ablation_child[0]).read_text()), args.ablation_child[1], args.ablation)
        return 0
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="vs_hf_trainer_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    validation = args.validation_file
    if args.eval_rows:
        validation = write_jsonl(work / "validation.jsonl", eval_rows(read_jsonl(args.validation_file), args.eval_rows))
    settings = {
        "model_dir": str(args.model_dir),
        "train_file": str(args.train_file),
        "validation_file": str(validation),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "eval_batch_size": args.eval_batch_size,
        "max_source_length": args.max_source_length,
        "max_target_length": args.max_target_length,
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "max_train_samples": args.max_train_samples,
        "threads": args.threads,
        "seed": args.seed,
        "max_tokens_per_batch": args.max_tokens_per_batch or args.eval_batch_size * args.max_source_length,
    }
    threads = str(args.threads)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "ACCEL_TASKS_NUM_THREADS": threads,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    print(f"[bench] same work: {json.dumps(settings)}", flush=True)
    print("[bench] accel_tasks command: " + " ".join(accel_command(settings, work / "accel_tasks-N")[1:]), flush=True)
    names = ("accel_tasks", "trainer")
    results: dict[str, list[dict]] = {name: [] for name in names}
    pair_ratios: list[dict[str, float]] = []
    for pair in range(args.pairs):
        for name in names:  # A B A B ...
            results[name].append(run_side(name, settings, work / f"{name}-{pair + 1}", env))
            r = results[name][-1]
            print(
                f"[bench] pair {pair + 1} {name:<11}: wall {r['wall_s']:6.1f} s  eval {r['eval_s']:5.2f} s "
                f"({r['eval_per_s']:6.1f} ex/s{_generate_share(r)})  peak RSS {r['rss'] / 2**20:6.0f} MiB  "
                f"ROUGE-1 {r['rouge1']:5.2f}  ROUGE-L {r['rougeL']:5.2f}",
                flush=True,
            )
        if pair == 0:
            shown = next(
                (line for line in results["trainer"][0]["log"].splitlines() if line.startswith("[trainer] settings:")),
                "",
            )
            print(f"[bench] Trainer {shown[len('[trainer] ') :]}", flush=True)
        a, b = results["accel_tasks"][-1], results["trainer"][-1]
        ratios = {
            "train_eval_wall": a["wall_s"] / b["wall_s"],
            "eval_gen_throughput": a["eval_per_s"] / b["eval_per_s"],
            "peak_rss": a["rss"] / b["rss"],
            "rouge1_delta": a["rouge1"] - b["rouge1"],
            "rougeL_delta": a["rougeL"] - b["rougeL"],
        }
        pair_ratios.append(ratios)
        print(
            f"[bench] pair {pair + 1} accel_tasks/Trainer: " + "  ".join(f"{k}={v:.3f}" for k, v in ratios.items()),
            flush=True,
        )
    if args.pairs < 3:
        print(f"[bench] {args.pairs} pair(s): a smoke run, not a measurement (use --pairs 3 or more)")
    print(f"\n{'median over ' + str(args.pairs) + ' pairs':<26} {'accel_tasks':>12} {'Trainer':>12}")
    for label, key, fmt in (
        ("train+eval wall (s)", "wall_s", "{:.1f}"),
        ("eval examples/s", "eval_per_s", "{:.1f}"),
        ("peak RSS (MiB)", "rss", "{:.0f}"),
        ("ROUGE-1", "rouge1", "{:.2f}"),
        ("ROUGE-L", "rougeL", "{:.2f}"),
    ):
        scale = 2**-20 if key == "rss" else 1
        a = fmt.format(median([r[key] for r in results["accel_tasks"]]) * scale)
        b = fmt.format(median([r[key] for r in results["trainer"]]) * scale)
        print(f"{label:<26} {a:>12} {b:>12}")
    med = {key: median([r[key] for r in pair_ratios]) for key in pair_ratios[0]}
    print(f"median peak_rss ratio {med['peak_rss']:.3f}, rouge1_delta {med['rouge1_delta']:+.2f} points")
    if args.ablation:
        (work / "ablation.json").write_text(json.dumps({**settings, "output_dir": str(work / "ablation")}))
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--ablation",
            str(args.ablation),
            "--ablation-child",
            str(work / "ablation.json"),
            str(work / "accel_tasks-1" / "model"),
        ]
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"[bench] ablation failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        print("\n".join(line for line in proc.stdout.splitlines() if line.startswith("[ablation]")), flush=True)
    if args.keep:
        print(f"runs and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"median ratios: train_eval_wall={med['train_eval_wall']:.3f} "
        f"eval_gen_throughput={med['eval_gen_throughput']:.3f} rougeL_delta={med['rougeL_delta']:+.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
