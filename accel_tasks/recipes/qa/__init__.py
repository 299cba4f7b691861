"""Extractive question answering (SQuAD v1.1 / v2.0) task logic, independent of the training loop.

- `squad_format`: official nested SQuAD json, and HF's flat rows under "data", -> flat rows.
- `span_features`: validation of raw rows, tokenisation into overlapping windows, train labels.
- `postprocess`: vectorised mapping of start/end logits back to answer text.
- `null_threshold`: SQuAD v2 no-answer probabilities and the null_score_diff_threshold tuned on an eval split.
- `options`: the task.* options of both answer styles; `squad_data`: the data and scoring both styles share.
- `span_model`: a span head on decoder-only models (backbone weights, pad token, question first).
- `answer_prompts`, `generative`: answers generated from a prompt (task.answer_style=generate).
"""

from accel_tasks.recipes.qa.errors import QADataError
from accel_tasks.recipes.qa.postprocess import (
    BestSpans,
    QAPredictions,
    SpanRules,
    choose_null_answers,
    postprocess_qa_predictions,
    squad_references,
)
from accel_tasks.recipes.qa.span_features import (
    EVAL_ONLY_COLUMNS,
    check_fast_tokenizer,
    prepare_eval_features,
    prepare_train_features,
    validate_examples,
)
from accel_tasks.recipes.qa.squad_format import (
    NESTED,
    flat_rows_under_data,
    flatten_squad,
    is_nested_squad,
    squad_json_layout,
)

__all__ = [
    "BestSpans",
    "EVAL_ONLY_COLUMNS",
    "QADataError",
    "QAPredictions",
    "SpanRules",
    "check_fast_tokenizer",
    "choose_null_answers",
    "NESTED",
    "flat_rows_under_data",
    "flatten_squad",
    "squad_json_layout",
    "is_nested_squad",
    "postprocess_qa_predictions",
    "prepare_eval_features",
    "prepare_train_features",
    "squad_references",
    "validate_examples",
]
