"""What is wrong with a local data file, found before anything loads: a directory where a file belongs, text that
is not UTF-8 (file, line and column), a file with no rows (empty, blank, or a CSV header alone), the first line of
a JSON-lines file that does not parse.

Why a module of its own: ``datasets`` reads these files as Arrow and reports such faults late and in its own
words (a UnicodeDecodeError when the rows are read, "Instruction "data" corresponds to no data!" for a header-only
CSV); the user needs the file, the line and what to do, before the model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from accel_tasks.errors import ConfigError

TEXT_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
PARQUET_MAGIC = b"PAR1"
# Read in blocks of this many bytes: a file of any size is checked in constant memory.
BLOCK_BYTES = 1 << 23


def check_file_path(path: Path, what: str) -> None:
    """A data file that is missing or a directory is one line naming what to pass instead."""
    if path.is_dir():
        raise ConfigError(
            f"{what} {str(path)!r} is a directory, not a file; point it at one data file (json, jsonl, csv, tsv, "
            "parquet), or load a dataset directory with data.name=DIR"
        )
    if not path.is_file():
        raise ConfigError(
            f"{what} {str(path)!r} does not exist; check the path (relative paths start from {Path.cwd()})"
        )


def check_parquet_file(path: Path, what: str) -> None:
    """A .parquet file starts and ends with parquet's magic bytes (a JSON or CSV file renamed is not one)."""
    if path.suffix.lower() != ".parquet":
        return
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise ConfigError(
            f"{what} {str(path)!r} is not a parquet file (no PAR1 magic bytes at its start and end); pass a parquet "
            "file, or give the file the suffix of what it holds (.jsonl, .csv)"
        )


def check_text_file(path: Path, what: str) -> None:
    """A text data file decodes as UTF-8 and holds at least one row (a CSV/TSV more than its header line)."""
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return
    rows = _utf8_lines(path, what)
    if rows == 0:
        raise ConfigError(f"{what} {str(path)!r} is empty (no line holds any text); point it at a file with examples")
    if path.suffix.lower() in (".csv", ".tsv") and rows == 1:
        raise ConfigError(f"{what} {str(path)!r} holds only a header line, no rows; point it at a file with examples")


def _utf8_lines(path: Path, what: str) -> int:
    """The number of non-blank lines; a byte that is not UTF-8 is one line naming its line, column and byte."""
    lines_before, filled = 0, 0
    with path.open("rb") as handle:
        carry = b""
        while True:
            block = handle.read(BLOCK_BYTES)
            data = carry + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            whole, carry = data[:cut], data[cut:]
            try:
                text = whole.decode("utf-8")
            except UnicodeDecodeError as exc:
                line_start = whole.rfind(b"\n", 0, exc.start) + 1
                line = lines_before + whole.count(b"\n", 0, exc.start) + 1
                raise ConfigError(
                    f"{what} {str(path)!r} is not UTF-8 text: byte 0x{whole[exc.start]:02x} at line {line}, column "
                    f"{exc.start - line_start + 1} cannot be decoded; save the file as UTF-8 "
                    "(e.g. iconv -f latin1 -t utf-8) or fix that line"
                ) from None
            lines_before += whole.count(b"\n")
            filled += sum(1 for line in text.splitlines() if line.strip())
            if not block:
                return filled


def first_bad_json_line(path: Path) -> Optional[str]:
    """'line N is not valid JSON (...)' for the first line of a JSON-lines file that does not parse, or None.

    Used where ``datasets`` failed on the file (at load, or mid-stream where its own message can name a row that
    is fine): the file is read again line by line so that the message names the line that is not.
    """
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line.rstrip())
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON ({error.msg} at column {error.colno}); fix or remove that line"
    return None
