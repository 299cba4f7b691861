"""accel_tasks against TRL's SFTTrainer on the same decoder-only fine-tuning: training tokens/s, train+eval wall,
eval generation speed, memory, ROUGE-L.

Both sides fine-tune the same model (a Qwen2-shaped causal LM built from a config, vocabulary 32,768 so the output
layer weighs as it does in real small LLMs; saved with weights, so both start from the same numbers) on the same
summarization-shaped data (the bundled sample: long prompts, short completions, rendered with the same ChatML chat
template), for the same optimizer steps, learning rate, warm-up, rows per step and row length, with the loss on the
completion only, then generate greedily for the validation prompts, in a fresh process each:

- **A, accel_tasks**: the real CLI with its fast settings for this work: ``train.packing=true`` (best-fit rows,
  a block-diagonal mask), the output layer computed only where there are labels (always on), and its eval
  generation (``eval.max_tokens_per_batch`` token-budget batches, finished rows dropped, KV cache).
- **B, TRL**: ``SFTTrainer`` with its recommended fast settings for prompt-completion data: ``packing=True``
  (strategy ``bfd``, which turns on padding-free batches), ``completion_only_loss=True``; then the ``generate``
  loop a TRL user writes for evaluation: the chat template with the generation prompt, batches of
  ``--eval-batch`` left-padded prompts, ``model.generate``, the prompt cut off, decoding.

Runs alternate A B A B ... (``--pairs``, default 3), one thread each. Per pair and as the median: real training
tokens per second (tokens that are not padding, over the training loop's own time: accel_tasks' ``train_tokens``
/ ``train_runtime_s``; TRL's ``num_tokens`` / ``train_runtime``), train_eval_wall (whole process), eval generation
examples/s, peak RSS, ROUGE-L (both scored with the package's rouge module, stemmed, one sentence per line). Ratios
are accel_tasks / TRL (train_eval_wall: accel_tasks' wall over TRL's, lower is better); rougeL_delta is accel_tasks
minus TRL in ROUGE points. The last line reads
``median ratios: train_tokens_per_s=X train_eval_wall=Y eval_gen_throughput=Z rougeL_delta=W``.

    pip install -e ".[bench]"                                          # TRL, the peer
    OMP_NUM_THREADS=1 python bench/vs_trl_sft.py                       # 3 pairs, 150 steps
    python bench/vs_trl_sft.py --pairs 1 --steps 4 --eval-rows 8       # a smoke run
    python bench/vs_trl_sft.py --device cuda                           # a GPU, bf16, unchanged otherwise
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vs_hf_trainer import run_process  # one fresh process: wall time, exit status, peak RSS (bench/ is on sys.path)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "accel_tasks" / "samples" / "summarization"
MARKER = "VS_TRL_RESULT "
INSTRUCTION = "Summarize this document:\n{document}\nSummary:"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
SHAPE = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}


def split_sentences(text: str) -> str:
    return "\n".join(s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip())


def build_world(root: Path, vocab: int) -> dict[str, Any]:
    """The model directory (Qwen2 config, the bundled ChatML tokenizer, weights) and the head's share of FLOPs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tokenizer = AutoTokenizer.from_pretrained(SAMPLE / "model_decoder_only")
    config = Qwen2Config(
        vocab_size=vocab,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **SHAPE,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    head = model.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - head - model.get_input_embeddings().weight.numel()
    return {"model_dir": str(root / "model"), "head_share": head / (head + body), "params": head + body}


def accel_command(settings: dict[str, Any], out: Path) -> list[str]:
    # On a GPU through accelerate launch (bf16 mixed precision is the launcher's setting); on CPU the module alone.
    launcher = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "bf16"]
    return [
        sys.executable,
        *(launcher if settings["device"] == "cuda" else []),
        "-m",
        "accel_tasks.run",
        "recipe=summarization",
        f"output_dir={out}",
        f"model.name_or_path={settings['model_dir']}",
        f"data.train_file={SAMPLE / 'train.jsonl'}",
        f"data.validation_file={settings['validation_file']}",
        f"train.max_steps={settings['steps']}",
        f"train.batch_size={settings['rows']}",
        "train.packing=true",
        f"train.packing_length={settings['length']}",
        f"train.lr={settings['lr']}",
        f"train.warmup_steps={settings['warmup']}",
        "train.weight_decay=0.0",
        "train.lr_scheduler=linear",
        "train.max_grad_norm=1.0",
        f"train.threads={settings['threads']}",
        "train.eval_at_start=false",
        "train.eval_every=0",
        "train.log_every=50",
        "train.report_to=[none]",
        f"eval.batch_size={settings['eval_batch']}",
        f"eval.max_tokens_per_batch={settings['eval_batch'] * settings['prompt_tokens']}",
        f"task.prompt_template={INSTRUCTION}",
        "task.max_source_length=256",
        f"task.max_target_length={settings['max_new_tokens']}",
        "generation.num_beams=1",
        f"generation.max_new_tokens={settings['max_new_tokens']}",
    ]


def trl_main(settings: dict[str, Any]) -> None:
    """The TRL side: SFTTrainer with packing and completion-only loss, then batched left-padded generate."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    sys.path.insert(0, str(REPO))
    from accel_tasks.metrics import load_metric

    torch.set_num_threads(settings["threads"])
    tokenizer = AutoTokenizer.from_pretrained(settings["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(settings["model_dir"])

    def conversation(row: dict) -> dict:
        prompt = [{"role": "user", "content": INSTRUCTION.format(document=row["document"])}]
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": row["summary"]}]}

    train = load_dataset("json", data_files=str(SAMPLE / "train.jsonl"), split="train")
    train = train.map(conversation, remove_columns=train.column_names)
    cuda = settings["device"] == "cuda"
    args = SFTConfig(
        output_dir=settings["output_dir"],
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["rows"],
        learning_rate=settings["lr"],
        warmup_steps=settings["warmup"],
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=settings["length"],
        packing=True,
        completion_only_loss=True,
        use_cpu=not cuda,
        bf16=cuda,
        report_to=[],
        save_strategy="no",
        logging_steps=50,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=42,
    )
    shown = ("packing", "packing_strategy", "padding_free", "completion_only_loss", "max_length", "optim")
    print("[trl] settings: " + ", ".join(f"{k}={getattr(args, k)}" for k in shown), flush=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    print(f"[trl] padding-free batches: {trainer.padding_free}", flush=True)
    result = trainer.train()
    tokens = next((h["num_tokens"] for h in reversed(trainer.state.log_history) if "num_tokens" in h), None)
    eval_start = time.perf_counter()
    predictions, references = trl_generate(model, tokenizer, settings)
    rouge = load_metric("rouge").compute(
        predictions=[split_sentences(p) for p in predictions],
        references=[split_sentences(r) for r in references],
        use_stemmer=True,
    )
    eval_s = time.perf_counter() - eval_start
    figures = {"train_s": result.metrics["train_runtime"], "tokens": tokens, "eval_s": eval_s}
    figures.update(eval_samples=len(predictions), rougeL=100 * float(rouge["rougeL"]))
    print(MARKER + json.dumps(figures), flush=True)


def trl_generate(model: Any, tokenizer: Any, settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What a TRL user writes to evaluate: chat-templated prompts, left-padded batches, generate, the prompt cut."""
    import torch

    rows = [json.loads(line) for line in Path(settings["validation_file"]).read_text().splitlines() if line.strip()]
    tokenizer.padding_side = "left"
    model.eval()
    predictions = []
    for start in range(0, len(rows), settings["eval_batch"]):
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": INSTRUCTION.format(document=row["document"])}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for row in rows[start : start + settings["eval_batch"]]
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=settings["max_new_tokens"], do_sample=False, num_beams=1)
        new = out[:, batch["input_ids"].shape[1] :]
        predictions += [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return predictions, [row["summary"] for row in rows]


def run_side(name: str, settings: dict[str, Any], out: Path, env: dict[str, str]) -> dict[str, float]:
    """One fresh process: its figures, whole-process wall time and peak RSS."""
    out.mkdir(parents=True, exist_ok=True)
    if name == "accel_tasks":
        command = accel_command(settings, out)
    else:
        (out / "settings.json").write_text(json.dumps({**settings, "output_dir": str(out)}))
        command = [sys.executable, str(Path(__file__).resolve()), "--trl-child", str(out / "settings.json")]
    log_path = out.parent / f"{out.name}.log"
    wall, status, rss = run_process(command, log_path, env)
    text = log_path.read_text(errors="replace")
    if status != 0:
        sys.exit(f"[bench] {name} failed; {log_path}:\n{text[-4000:]}")
    if name == "accel_tasks":
        metrics = json.loads((out / "metrics.json").read_text())
        train_s, tokens = metrics["train_runtime_s"], metrics["train_tokens"]
        eval_s, samples, rouge_l = metrics["eval_runtime_s"], metrics["eval_samples"], 100 * metrics["rougeL"]
        packing = re.search(r"packing: .*", text)
        figures = {"note": packing.group(0) if packing else ""}
    else:
        result = json.loads(next(line for line in text.splitlines() if line.startswith(MARKER))[len(MARKER) :])
        train_s, tokens, eval_s = result["train_s"], result["tokens"], result["eval_s"]
        samples, rouge_l = result["eval_samples"], result["rougeL"]
        figures = {"note": " ".join(line for line in text.splitlines() if line.startswith("[trl]"))}
    return {
        **figures,
        "tokens_per_s": tokens / train_s,
        "wall_s": wall,
        "eval_per_s": samples / eval_s,
        "rss_mib": rss / 2**20,
        "rougeL": rouge_l,
    }


def ratios(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {
        "train_tokens_per_s": a["tokens_per_s"] / b["tokens_per_s"],
        "train_eval_wall": a["wall_s"] / b["wall_s"],
        "eval_gen_throughput": a["eval_per_s"] / b["eval_per_s"],
        "rougeL_delta": a["rougeL"] - b["rougeL"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rows", type=int, default=2, help="packed rows per optimizer step (both sides)")
    parser.add_argument("--length", type=int, default=512, help="tokens per packed row (both sides)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-rows", type=int, default=100)
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--trl-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_child:
        trl_main(json.loads(Path(args.trl_child).read_text()))
        return
    root = Path(tempfile.mkdtemp(prefix="vs_trl_"))
    world = build_world(root, args.vocab)
    validation = [json.loads(line) for line in (SAMPLE / "validation.jsonl").read_text().splitlines()][: args.eval_rows]
    (root / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in validation))
    settings = {**vars(args), "warmup": max(1, args.steps // 10), "max_new_tokens": 64, "prompt_tokens": 160}
    settings.update(model_dir=world["model_dir"], validation_file=str(root / "validation.jsonl"))
    print(
        f"model: Qwen2 {SHAPE} vocab {args.vocab}, {world['params']:,} parameters without the input embedding; "
        f"the output layer is {world['head_share']:.0%} of a token's forward matmul FLOPs (attention scores aside)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "ACCEL_TASKS_NUM_THREADS": str(args.threads)}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    pairs = []
    for pair in range(args.pairs):
        a = run_side("accel_tasks", settings, root / f"a{pair}", env)
        b = run_side("trl", settings, root / f"b{pair}", env)
        pairs.append(ratios(a, b))
        for name, side in (("accel_tasks", a), ("trl", b)):
            figures = " ".join(f"{k}={v:.4g}" for k, v in side.items() if k != "note")
            print(f"pair {pair} {name}: {figures} | {side['note']}")
        print(f"pair {pair} ratios: " + " ".join(f"{k}={v:.3f}" for k, v in pairs[-1].items()), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    medians = {key: statistics.median(p[key] for p in pairs) for key in pairs[0]}
    print("median ratios: " + " ".join(f"{k}={v:.3f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
