"""Convert the official nested SQuAD json to the flat rows every other QA function works on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accel_tasks.recipes.qa.errors import QADataError

# Enough of the head of a file to see the nested layout without parsing a 40 MB document.
_SNIFF_BYTES = 65536


NESTED = "nested"
FLAT_UNDER_DATA = "flat rows under data"


def squad_json_layout(path: str | Path) -> str | None:
    """Which SQuAD json layout `path` has, from the head of the file only (a 40 MB file is not parsed twice).

    NESTED: the official `{"data": [{"title", "paragraphs": [...]}]}`; FLAT_UNDER_DATA: HF's example fixture
    `{"version": ..., "data": [{"id", "question", "context", "answers"}, ...]}` (its scripts pass field="data");
    None: anything else, for the common loader.
    """
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head.lstrip().startswith("{") or '"data"' not in head:
        return None
    if '"paragraphs"' in head:
        return NESTED
    return FLAT_UNDER_DATA if '"question"' in head else None


def is_nested_squad(path: str | Path) -> bool:
    """True when `path` looks like an official nested SQuAD json (`{"data": [{"paragraphs": ...`)."""
    return squad_json_layout(path) == NESTED


def flat_rows_under_data(document: dict) -> list[dict]:
    """The rows of `{"version": ..., "data": [flat rows]}`, checked to be SQuAD rows."""
    rows = _require(document, "data", "the top level", list)
    for index, row in enumerate(rows):
        for key in ("question", "context", "answers"):
            _require(row, key, f"data[{index}]", (str, dict) if key != "answers" else dict)
    return rows


def _require(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise QADataError(
            f"nested SQuAD json: {where} has no '{key}'; expected the official SQuAD layout "
            "{'data': [{'title', 'paragraphs': [{'context', 'qas': [{'id', 'question', 'answers'}]}]}]}"
        )
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise QADataError(f"nested SQuAD json: {where}.{key} is {type(value).__name__}, expected {names}")
    return value


def flatten_squad(nested: dict) -> list[dict]:
    """Flatten `{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}` into one row per question.

    Each row: `id, title, context, question, answers={"text": [...], "answer_start": [...]}`, the layout of
    the hub `squad`/`squad_v2` datasets. Questions marked `is_impossible` (SQuAD v2) get empty answers.
    """
    data = _require(nested, "data", "the top level", list)
    rows: list[dict] = []
    for a, article in enumerate(data):
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = _require(article, "paragraphs", f"data[{a}]", list)
        for p, paragraph in enumerate(paragraphs):
            where_p = f"data[{a}].paragraphs[{p}]"
            context = _require(paragraph, "context", where_p, str)
            for q, qa in enumerate(_require(paragraph, "qas", where_p, list)):
                where_q = f"{where_p}.qas[{q}]"
                qid = _require(qa, "id", where_q, (str, int))
                question = _require(qa, "question", where_q, str)
                texts: list[str] = []
                starts: list[int] = []
                if not qa.get("is_impossible", False):
                    for n, answer in enumerate(_require(qa, "answers", where_q, list)):
                        texts.append(_require(answer, "text", f"{where_q}.answers[{n}]", str))
                        starts.append(int(_require(answer, "answer_start", f"{where_q}.answers[{n}]", (int, float))))
                rows.append(
                    {
                        "id": str(qid),
                        "title": str(title),
                        "context": context,
                        "question": question,
                        "answers": {"text": texts, "answer_start": starts},
                    }
                )
    return rows
