"""The Hugging Face peer for bench/startup.py: a minimal ``Seq2SeqTrainer`` summarization script, written the way
transformers' own examples (run_summarization.py) are, for the same work as ``accel_tasks recipe=summarization``
with the bundled model: the bundled Marian config and tokenizer (random weights), the bundled train/validation
jsonl, max source/target lengths 128/48, batch 16, AdamW lr 2e-3 with 30 warm-up steps, ROUGE loaded before
training (as the example does and as accel_tasks' preflight does), greedy generation for eval.

    python bench/startup_trainer_script.py --model_dir accel_tasks/samples/summarization/model \\
        --train_file accel_tasks/samples/summarization/train.jsonl \\
        --validation_file accel_tasks/samples/summarization/validation.jsonl \\
        --metric accel_tasks/metrics/rouge --output_dir /tmp/trainer-run --max_steps 1200 --logging_steps 1
    ... --print_config        # the parsed arguments as JSON, then exit (the peer of accel-tasks --print-config)

After the first optimizer step it prints ``BENCH first optimizer step done`` (a TrainerCallback), which
bench/startup.py waits for. Imports are at the top, as in the HF examples: the argument dataclasses themselves
(``Seq2SeqTrainingArguments``) live in transformers and import torch, so nothing could be deferred for
``--print_config`` or an argument error anyway.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field

import datasets
import evaluate
import numpy as np
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    set_seed,
)

FIRST_STEP_MARKER = "BENCH first optimizer step done"


@dataclass
class ScriptArguments:
    model_dir: str = field(
        metadata={"help": "A directory with config.json and a tokenizer; the model is built from the config."}
    )
    train_file: str = field(metadata={"help": "jsonl with document and summary"})
    validation_file: str = field(metadata={"help": "jsonl with document and summary"})
    metric: str = field(default="rouge", metadata={"help": "evaluate module (a local path works offline)"})
    text_column: str = "document"
    summary_column: str = "summary"
    max_source_length: int = 128
    max_target_length: int = 48
    print_config: bool = field(default=False, metadata={"help": "Print the parsed arguments and exit."})


class FirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1 and state.is_world_process_zero:
            print(FIRST_STEP_MARKER, flush=True)


def main() -> int:
    parser = HfArgumentParser((ScriptArguments, Seq2SeqTrainingArguments))
    script_args, training_args = parser.parse_args_into_dataclasses()
    if script_args.print_config:
        print(json.dumps(asdict(script_args), indent=2))
        print(training_args.to_json_string())
        return 0
    set_seed(training_args.seed)
    metric = evaluate.load(script_args.metric)
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_dir)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(script_args.model_dir))
    raw = datasets.load_dataset(
        "json", data_files={"train": script_args.train_file, "validation": script_args.validation_file}
    )

    def preprocess(batch):
        features = tokenizer(batch[script_args.text_column], max_length=script_args.max_source_length, truncation=True)
        labels = tokenizer(
            text_target=batch[script_args.summary_column], max_length=script_args.max_target_length, truncation=True
        )
        features["labels"] = labels["input_ids"]
        return features

    with training_args.main_process_first(desc="dataset map pre-processing"):
        tokenized = raw.map(preprocess, batched=True, remove_columns=raw["train"].column_names, desc="tokenizing")
    collator = DataCollatorForSeq2Seq(
        tokenizer,
        model=model,
        label_pad_token_id=-100,
        pad_to_multiple_of=8 if training_args.fp16 or training_args.bf16 else None,
    )

    def compute_metrics(eval_preds):
        predictions, labels = eval_preds
        predictions = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)
        decoded = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return metric.compute(predictions=decoded, references=references, use_stemmer=True)

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=[FirstStep()],
    )
    trainer.train()
    print(json.dumps(trainer.evaluate(max_length=script_args.max_target_length, num_beams=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
