"""Reading the docstring under each dataclass field: the one-line docs that ``--help`` prints.

Why docstrings and not ``#`` comments: they are part of the code, so ``--help`` shows exactly what
the source says, for the built-in groups and for every recipe's (or plugin's) Options alike.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import is_dataclass


def field_docs(options: type) -> dict[str, str]:
    """{field: one-line doc} of a dataclass, from the string literal under each field (litgpt style).

    A docstring wrapped over several source lines reads as one line: whitespace runs become one space.
    """
    docs: dict[str, str] = {}
    for klass in reversed(options.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs
