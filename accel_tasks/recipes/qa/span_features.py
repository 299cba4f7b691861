"""Raw SQuAD rows -> model features: validation, overlapping windows, start/end labels.

Reference behaviour: the Hugging Face `run_qa_no_trainer.py` example (question/context order swapped
for left-padding tokenizers, long contexts split into windows that overlap by `doc_stride` tokens,
labels at the CLS token when the answer is not fully inside a window).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from accel_tasks.recipes.qa.errors import QADataError

REQUIRED_COLUMNS = ("id", "context", "question", "answers")
# Columns prepare_eval_features adds for postprocessing; drop them before a batch reaches the model.
EVAL_ONLY_COLUMNS = ("example_id", "offset_mapping", "cls_index")

# Ends the question of a tokenizer without a pair template, so a model sees where the context begins.
QUESTION_END = "\n"
# model_max_length values above this are transformers' "no limit" sentinel, not a real model limit.
_UNLIMITED = 1_000_000


def check_fast_tokenizer(tokenizer: Any) -> None:
    """Raise unless `tokenizer` is a fast (Rust) tokenizer: only those return character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise QADataError(
            f"extractive QA needs a fast tokenizer (it maps answers through character offsets), but "
            f"{type(tokenizer).__name__} is a slow Python tokenizer; load the tokenizer with "
            "AutoTokenizer.from_pretrained(..., use_fast=True) or use a model that ships a tokenizer.json"
        )


def _columns(examples: Any) -> Mapping[str, Sequence[Any]]:
    """Accept a dict of columns, a `datasets.Dataset`, or a list of row dicts; return column access."""
    if hasattr(examples, "with_format"):  # a Dataset: whole columns through Arrow, not row by row
        _check_columns(examples)
        table = examples.with_format("arrow")
        return {name: table[name].to_pylist() for name in REQUIRED_COLUMNS}
    if isinstance(examples, list):
        if examples and not isinstance(examples[0], Mapping):
            raise QADataError("QA examples must be rows (dicts) or columns (a dict of lists / a Dataset)")
        keys = set().union(*(row.keys() for row in examples)) if examples else set(REQUIRED_COLUMNS)
        return {key: [row.get(key) for row in examples] for key in keys}
    return examples


def _check_columns(columns: Any) -> None:
    names = set(getattr(columns, "column_names", None) or columns.keys())
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise QADataError(
            f"QA data is missing column(s) {', '.join(missing)} (has: {', '.join(sorted(names))}); expected SQuAD "
            "rows id, context, question, answers={'text': [...], 'answer_start': [...]}; rename columns with "
            "the data config or convert nested SQuAD json with flatten_squad"
        )


def _answer_problems(qid: str, context: str, answers: Any, allow_unanswerable: bool) -> list[str]:
    if not isinstance(answers, Mapping) or "text" not in answers or "answer_start" not in answers:
        return [f"example {qid!r}: answers must be {{'text': [...], 'answer_start': [...]}}, got {answers!r}"]
    texts, starts = list(answers["text"] or []), list(answers["answer_start"] or [])
    if len(texts) != len(starts):
        return [f"example {qid!r}: {len(texts)} answer texts but {len(starts)} answer_start values"]
    if not texts and not allow_unanswerable:
        return [f"example {qid!r}: no answer; unanswerable questions need SQuAD v2 mode (version_2_with_negative=true)"]
    problems = []
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text:
            problems.append(f"example {qid!r}: empty answer text")
        elif not isinstance(start, int) or isinstance(start, bool):
            problems.append(f"example {qid!r}: answer_start {start!r} is not an integer")
        elif context[start : start + len(text)] != text:
            found = context[start : start + len(text)]
            problems.append(
                f"example {qid!r}: answer {text!r} is not at answer_start={start} (the context has {found!r} there)"
            )
    return problems


def validate_examples(examples: Any, allow_unanswerable: bool = True) -> list[str]:
    """One message per problem, each naming the example id; an empty list means the rows are usable.

    Bad rows are reported rather than dropped so a broken conversion cannot silently shrink a data set;
    the caller raises one error listing them. Missing columns raise at once (nothing else can be checked).
    """
    columns = _columns(examples)
    _check_columns(columns)
    ids = [str(i) for i in columns["id"]]
    problems: list[str] = []
    for qid, count in Counter(ids).items():
        if count > 1:
            problems.append(f"example {qid!r}: id used {count} times; ids must be unique (predictions are keyed by id)")
    for qid, context, question, answers in zip(ids, columns["context"], columns["question"], columns["answers"]):
        if not isinstance(context, str) or not context.strip():
            problems.append(f"example {qid!r}: empty context")
            continue
        if not isinstance(question, str) or not question.strip():
            problems.append(f"example {qid!r}: empty question")
        problems.extend(_answer_problems(qid, context, answers, allow_unanswerable))
    return problems


def _check_lengths(
    ids: Sequence[Any], questions: list[str], tokenizer: Any, max_seq_length: int, doc_stride: int
) -> None:
    """Fail with the example id before the Rust tokenizer panics on a window with no room for context."""
    if max_seq_length <= 0 or doc_stride < 0:
        raise QADataError(f"max_seq_length ({max_seq_length}) must be > 0 and doc_stride ({doc_stride}) >= 0")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < _UNLIMITED and max_seq_length > limit:
        raise QADataError(
            f"max_seq_length={max_seq_length} exceeds the tokenizer's model_max_length={limit}; "
            f"set max_seq_length <= {limit}"
        )
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids_) for ids_ in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    for qid, n_tokens in zip(ids, lengths):
        room = max_seq_length - n_tokens - specials
        if room <= doc_stride:
            raise QADataError(
                f"example {str(qid)!r}: the question has {n_tokens} tokens, so max_seq_length={max_seq_length} leaves "
                f"{room} token(s) per window for the context, which must be more than doc_stride={doc_stride}; raise "
                f"max_seq_length to at least {n_tokens + specials + doc_stride + 1}, lower doc_stride, "
                "or shorten the question"
            )


def _tokenize_windows(
    examples: Mapping[str, Sequence[Any]], tokenizer: Any, max_seq_length: int, doc_stride: int, pad_to_max: bool
) -> tuple[Any, int]:
    """Tokenise question/context pairs into overlapping windows; returns (encoding, context sequence index)."""
    check_fast_tokenizer(tokenizer)
    _check_columns(examples)
    # Leading whitespace in questions wastes window room and breaks some tokenizers' offsets (as in HF).
    questions = [q.lstrip() for q in examples["question"]]
    contexts = list(examples["context"])
    pad_on_right = tokenizer.padding_side == "right"
    if pad_on_right and tokenizer.num_special_tokens_to_add(pair=True) == 0:
        # No pair template (GPT-2, Qwen): nothing would mark where the question ends and the context begins.
        questions = [q.rstrip() + QUESTION_END for q in questions]
    _check_lengths(examples["id"], questions, tokenizer, max_seq_length, doc_stride)
    encoding = tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max else False,
    )
    return encoding, (1 if pad_on_right else 0)


def _cls_index(input_ids: Sequence[int], tokenizer: Any) -> int:
    """Where a window's "no answer" is read: its CLS (or bos) token, else position 0. A bos token that also pads
    (GPT-2 after its eos became the pad token) marks padding, not the window's start."""
    for token_id in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if token_id is not None and token_id != tokenizer.pad_token_id and token_id in input_ids:
            return list(input_ids).index(token_id)
    return 0


def _label_window(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    context_index: int,
    start_char: int,
    end_char: int,
) -> tuple[int, int] | None:
    """Token positions of the answer characters [start_char, end_char) if fully inside this window."""
    context_tokens = [t for t, s in enumerate(sequence_ids) if s == context_index]
    if not context_tokens:
        return None
    first, last = context_tokens[0], context_tokens[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return None
    start_token = first
    for t in context_tokens:
        if offsets[t][0] <= start_char:
            start_token = t
        else:
            break
    end_token = last
    for t in reversed(context_tokens):
        if t < start_token:
            break
        if offsets[t][1] >= end_char:
            end_token = t
        else:
            break
    return start_token, end_token


def prepare_train_features(
    examples: dict[str, list], tokenizer: Any, max_seq_length: int, doc_stride: int, pad_to_max: bool = False
) -> dict[str, list]:
    """Batched `datasets.map` function: windows plus `start_positions`/`end_positions` labels.

    A window whose context does not contain the whole (first) answer, and every window of an
    unanswerable question, is labelled with the CLS position, which the model learns as "no answer here".
    """
    encoding, context_index = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max)
    sample_map = encoding.pop("overflow_to_sample_mapping")
    offset_mapping = encoding.pop("offset_mapping")
    starts: list[int] = []
    ends: list[int] = []
    for i, offsets in enumerate(offset_mapping):
        cls_index = _cls_index(encoding["input_ids"][i], tokenizer)
        answers = examples["answers"][sample_map[i]]
        span = None
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            span = _label_window(offsets, encoding.sequence_ids(i), context_index, start_char, end_char)
        starts.append(cls_index if span is None else span[0])
        ends.append(cls_index if span is None else span[1])
    features = dict(encoding)
    features["start_positions"] = starts
    features["end_positions"] = ends
    return features


def prepare_eval_features(
    examples: dict[str, list], tokenizer: Any, max_seq_length: int, doc_stride: int, pad_to_max: bool = False
) -> dict[str, list]:
    """Batched `datasets.map` function: the same windows as training, plus what postprocessing needs.

    Each feature keeps `example_id` (its example's id), `offset_mapping` with every non-context
    position (question, special and padding tokens) set to None, so only context spans can be predicted,
    and `cls_index` (where the SQuAD v2 null score is read; not always 0, e.g. after left padding).
    The recipe drops these `EVAL_ONLY_COLUMNS` before the batch reaches the model, and must pad batches
    on the right so logits stay aligned with `offset_mapping`.
    """
    encoding, context_index = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max)
    sample_map = encoding.pop("overflow_to_sample_mapping")
    offset_mapping = encoding.pop("offset_mapping")
    ids = examples["id"]
    features = dict(encoding)
    features["example_id"] = [str(ids[s]) for s in sample_map]
    features["offset_mapping"] = [
        [list(o) if s == context_index else None for o, s in zip(offsets, encoding.sequence_ids(i))]
        for i, offsets in enumerate(offset_mapping)
    ]
    features["cls_index"] = [_cls_index(input_ids, tokenizer) for input_ids in encoding["input_ids"]]
    return features
