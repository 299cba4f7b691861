"""The size rules of docs/design.md, checked on the package's source so they stay true.

No function over 80 lines of code (docstrings, blank and comment-only lines do not count) or over 8 parameters
(``self`` and ``cls`` do not count), no module over 500 lines. Why: the loop's main function grew to 119 lines and
14 parameters and a recipe to 673 lines before anyone counted; a rule nobody checks drifts.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "accel_tasks"
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8
MAX_MODULE_LINES = 500


def sources() -> dict[str, str]:
    """Every Python file of the package (the shipped metric modules included: they are our code too)."""
    return {str(path.relative_to(PACKAGE.parent)): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of code in a function's body: its docstring, blank lines and comment-only lines left out."""
    start = node.body[0].lineno
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        start = first.end_lineno + 1
    body = lines[start - 1 : node.end_lineno]
    return sum(1 for line in body if line.strip() and not line.strip().startswith("#"))


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    named = [arg.arg for arg in args.posonlyargs + args.args + args.kwonlyargs if arg.arg not in ("self", "cls")]
    return len(named)


def functions() -> list[tuple[str, int, int]]:
    """(where, lines of code, parameters) of every function and method."""
    found = []
    for name, text in sources().items():
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{name}:{node.lineno}:{node.name}", code_lines(node, lines), parameters(node)))
    return found


def test_the_counts_are_read():
    """The rules below would pass on nothing: the package's functions are found and counted."""
    found = {where.rsplit(":", 1)[1]: (length, count) for where, length, count in functions()}
    assert len(found) > 300
    assert found["entry"][1] == 0 and found["entry"][0] >= 3


def test_code_lines_skip_the_docstring_comments_and_blank_lines():
    text = 'def f(a, b, *, c):\n    """Doc.\n\n    More."""\n    # a comment\n\n    x = a\n    return x\n'
    node = ast.parse(text).body[0]
    assert (code_lines(node, text.splitlines()), parameters(node)) == (2, 3)


def test_no_function_over_80_lines_of_code():
    long = [(where, length) for where, length, _ in functions() if length > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code: {long}"


def test_no_function_over_8_parameters():
    wide = [(where, count) for where, _, count in functions() if count > MAX_PARAMETERS]
    assert not wide, f"functions over {MAX_PARAMETERS} parameters: {wide}"


def test_no_module_over_500_lines():
    big = [(name, len(text.splitlines())) for name, text in sources().items()]
    big = [(name, count) for name, count in big if count > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"
