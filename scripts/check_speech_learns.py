"""De-risk check: does the bundled tiny CTC model learn the bundled speech sample on a CPU?

Plain PyTorch (no accelerate), using the accel_tasks.recipes.speech functions the recipe uses:
build ``Wav2Vec2BertForCTC`` from the bundled config, train for a wall-clock budget on
``train.jsonl``, greedy-decode ``validation.jsonl`` (two unseen voices) and print WER/CER
before and after.

    OMP_NUM_THREADS=1 python scripts/check_speech_learns.py [--seconds 150] [--lr 2e-3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jiwer
import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForCTC, AutoProcessor, get_linear_schedule_with_warmup

from accel_tasks.recipes.speech.audio_features import CTCCollator, prepare_speech_features
from accel_tasks.recipes.speech.decode import decode_ctc_predictions
from accel_tasks.recipes.speech.normalize import TextNormalizer

SAMPLE = Path(__file__).resolve().parents[1] / "accel_tasks" / "samples" / "speech_recognition"


def load_split(name: str, processor, normalizer):
    """Read a jsonl split and turn it into CTC features."""
    ds = load_dataset("json", data_files=str(SAMPLE / f"{name}.jsonl"), split="train")
    refs = [normalizer(t) for t in ds["text"]]
    feats = ds.map(
        prepare_speech_features,
        batched=True,
        remove_columns=ds.column_names,
        fn_kwargs=dict(
            feature_extractor=processor.feature_extractor,
            tokenizer=processor.tokenizer,
            normalizer=normalizer,
            base_dir=SAMPLE,
        ),
        load_from_cache_file=False,
    )
    return feats.with_format("numpy", columns=["input_features", "attention_mask", "labels"]), refs


@torch.no_grad()
def evaluate(model, loader, tokenizer, refs) -> tuple[float, float, list[str]]:
    """Greedy CTC decode the split; return WER, CER (in %) and the predictions."""
    model.eval()
    preds: list[str] = []
    for batch in loader:
        logits = model(input_features=batch["input_features"], attention_mask=batch["attention_mask"]).logits
        preds += decode_ctc_predictions(logits, tokenizer, batch["attention_mask"].sum(-1))
    model.train()
    return 100 * jiwer.wer(refs, preds), 100 * jiwer.cer(refs, preds), preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="training wall-clock budget")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config value (JSON value), e.g. --set hidden_dropout=0.1",
    )
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.manual_seed(args.seed)

    model_dir = SAMPLE / "model"
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForCTC.from_config(AutoConfig.from_pretrained(model_dir, **overrides))
    normalizer = TextNormalizer()
    train, _ = load_split("train", processor, normalizer)
    val, refs = load_split("validation", processor, normalizer)
    collate = CTCCollator(processor)
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collate, drop_last=True)
    val_loader = DataLoader(val, batch_size=32, collate_fn=collate)

    wer0, cer0, _ = evaluate(model, val_loader, processor.tokenizer, refs)
    print(f"config overrides: {overrides}")
    print(f"before: WER {wer0:.1f}  CER {cer0:.1f}")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    # Schedule length is a guess from the budget; the loop stops on time, not steps.
    sched = get_linear_schedule_with_warmup(opt, args.warmup, num_training_steps=2000)
    start, step, epoch = time.monotonic(), 0, 0
    while time.monotonic() - start < args.seconds:
        epoch += 1
        for batch in train_loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 25 == 0:
                print(f"step {step} epoch {epoch} loss {loss.item():.3f} t={time.monotonic() - start:.0f}s")
            if time.monotonic() - start >= args.seconds:
                break
    elapsed = time.monotonic() - start

    wer1, cer1, preds = evaluate(model, val_loader, processor.tokenizer, refs)
    print(
        f"after {step} steps ({epoch} epochs, {elapsed:.0f} s, lr {args.lr}, batch {args.batch_size}): "
        f"WER {wer1:.1f}  CER {cer1:.1f}"
    )
    for ref, pred in list(zip(refs, preds))[:5]:
        print(f"  ref={ref!r}  pred={pred!r}")


if __name__ == "__main__":
    main()
