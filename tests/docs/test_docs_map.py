"""README.md and docs/ stay a short manual with a map: the README at most 250 lines, no line over 200 characters, every
docs page linked from the README, every relative link resolving, every command line shown in tests/README.md, and
every test tests/README.md names existing. Fast: it reads files only, no model runs.

A command line is a line of a fenced code block (``\\`` continuations joined, a trailing ``# comment`` dropped) or a
table cell holding one inline code span, that starts with one of COMMAND_PREFIXES, after any ``NAME=value``
environment settings. tests/README.md must hold it as written (whitespace aside); that is where it is mapped to the
test that runs it. So a command added to the docs without a test fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS_DIR = REPO / "docs"
TESTS_README = REPO / "tests" / "README.md"

MAX_README_LINES = 250
MAX_LINE_CHARS = 200
# One page per topic, each linked from the README.
REQUIRED_PAGES = (
    "usage.md",
    "configuration.md",
    "recipes-and-plugins.md",
    "scaling-and-engines.md",
    "run-integrity-and-errors.md",
    "data-and-streaming.md",
    "report-and-model-card.md",
    "performance.md",
    "design.md",
)
COMMAND_PREFIXES = (
    "accelerate launch",
    "accel-tasks",
    "python -m accel_tasks",
    "python bench/",
    "python scripts/",
    "make ",
    "pytest ",
)
ENV_SETTING = re.compile(r"[A-Z_][A-Z0-9_]*=\S*\s+")
TRAILING_COMMENT = re.compile(r"\s+#\s.*$")
CITED_TEST = re.compile(r"(tests/[\w/.-]+\.py)::(\w+)")
CITED_FILE = re.compile(r"\b((?:tests|bench|scripts)/[\w/.-]+\.py)\b")


def doc_pages() -> list[Path]:
    return sorted(DOCS_DIR.glob("*.md"))


def manual() -> list[Path]:
    return [README, *doc_pages()]


def normalise(text: str) -> str:
    return " ".join(text.split())


def as_command(line: str) -> str | None:
    """The line as a command (whitespace normalised) when it is one, else None."""
    line = normalise(line)
    rest = line
    while ENV_SETTING.match(rest):
        rest = rest[ENV_SETTING.match(rest).end() :]
    return line if rest.startswith(COMMAND_PREFIXES) else None


def fenced_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every command line inside a fenced code block."""
    found: list[tuple[int, str]] = []
    in_fence, pending, start = False, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            in_fence, pending = not in_fence, ""
            continue
        if not in_fence or (not pending and stripped.startswith("#")):
            continue
        if not pending:
            start = number
        line = TRAILING_COMMENT.sub("", stripped)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = as_command(pending + line)
        pending = ""
        if command:
            found.append((start, command))
    return found


def table_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every table cell that is one inline code span holding a command."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("|"):
            continue
        for cell in re.split(r"(?<!\\)\|", line):
            cell = cell.strip()
            if len(cell) > 2 and cell[0] == cell[-1] == "`" and cell.count("`") == 2:
                command = as_command(cell[1:-1].replace("\\|", "|"))
                if command:
                    found.append((number, command))
    return found


def commands_of(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return fenced_commands(text) + table_commands(text)


def mapped_text() -> str:
    return normalise(TESTS_README.read_text(encoding="utf-8").replace("\\|", "|"))


def test_the_readme_is_short_and_no_line_is_long():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    long = [
        f"{path.relative_to(REPO)}:{number} ({len(line)} characters)"
        for path in manual()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > MAX_LINE_CHARS
    ]
    assert not long, f"lines over {MAX_LINE_CHARS} characters: " + ", ".join(long)


def test_the_readme_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "```bash"
    assert lines[1].startswith("make run ") and lines[2].startswith("make test ") and lines[3] == "```"


def test_every_docs_page_is_linked_from_the_readme():
    readme = README.read_text(encoding="utf-8")
    pages = {path.name for path in doc_pages()}
    assert set(REQUIRED_PAGES) <= pages, f"missing pages: {sorted(set(REQUIRED_PAGES) - pages)}"
    unlinked = sorted(name for name in pages if f"](docs/{name})" not in readme)
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"


def test_every_relative_link_resolves():
    broken = [
        f"{path.relative_to(REPO)}: {target}"
        for path in [*manual(), TESTS_README, REPO / "bench" / "README.md"]
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
        if "://" not in target and not (path.parent / target).exists()
    ]
    assert not broken, f"links to files that do not exist: {broken}"


def test_the_manual_shows_commands():
    """The check below would pass on pages without commands: make sure it finds the ones we know of."""
    found = {command for path in manual() for _, command in commands_of(path)}
    assert "make run" in found and "make test" in found
    assert "accelerate launch -m accel_tasks.run recipe=summarization" in found
    assert "accel-tasks recipe=translation --help" in found
    assert "OMP_NUM_THREADS=1 ACCEL_TASKS_NUM_THREADS=1 python bench/loop_overhead.py" in found  # a table cell


def test_every_command_line_is_mapped_to_a_test():
    mapped = mapped_text()
    unmapped = [
        f"{path.relative_to(REPO)}:{number}: {command}"
        for path in manual()
        for number, command in commands_of(path)
        if command not in mapped
    ]
    assert not unmapped, (
        "command lines that tests/README.md does not map to a test (add a row naming the test that runs each one "
        "as written):\n" + "\n".join(unmapped)
    )


def test_every_cited_test_exists():
    text = TESTS_README.read_text(encoding="utf-8")
    cited = CITED_TEST.findall(text)
    assert len(cited) > 50, "tests/README.md cites tests as tests/<dir>/<file>.py::<test name>"
    missing = []
    for path, name in cited:
        source = REPO / path
        if not source.is_file():
            missing.append(f"{path} (no such file)")
        elif not re.search(rf"^\s*(async\s+)?def {name}\(", source.read_text(encoding="utf-8"), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, "tests/README.md names tests that do not exist: " + ", ".join(missing)


def test_every_citation_names_its_file():
    """`::test_x` alone, or `test_x...`, would escape the check above: each test is cited with its whole path."""
    text = TESTS_README.read_text(encoding="utf-8")
    bare = [match.group(0) for match in re.finditer(r"(?<!\.py)::\w*", text)]
    assert not bare, f"tests cited without their file: {bare}"
    abbreviated = re.findall(r"::\w*\.\.\.", text)
    assert not abbreviated, f"abbreviated test names: {abbreviated}"
    missing_files = sorted({path for path in CITED_FILE.findall(text) if not (REPO / path).is_file()})
    assert not missing_files, f"tests/README.md names files that do not exist: {missing_files}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("```bash\nmake run     # set up\n```\n", ["make run"]),
        ("```\naccel-tasks \\\n  recipe=x  a=b   # note\n```\n", ["accel-tasks recipe=x a=b"]),
        ("```\n# a comment\nX_Y=1 python bench/a.py --n 2\nBartFor: 1\n```\n", ["X_Y=1 python bench/a.py --n 2"]),
        ("accel-tasks --list outside a fence\n", []),
    ],
)
def test_command_lines_are_read_from_fences(text, expected):
    assert [command for _, command in fenced_commands(text)] == expected


def test_command_lines_are_read_from_table_cells():
    text = "| what | command |\n|---|---|\n| x | `A=1 python bench/x.py [--y]` |\n| y | `not a command` |\n"
    assert [command for _, command in table_commands(text)] == ["A=1 python bench/x.py [--y]"]
