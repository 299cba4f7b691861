"""The house rules of docs/design.md, checked on the import graph so they stay true.

Every ``import`` of the package counts, function-level (lazy) ones included: a lazy import is still a
dependency, and the circles this test exists for were lazy ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "accel_tasks"
# Third-party packages a recipe must not reach into: it gets what it needs through its hooks.
RECIPE_BANNED = ("accelerate", "deepspeed", "peft")
# Parts of the package a recipe must not import: the engines and the loop's machinery (packages include their modules).
RECIPE_BANNED_OWN = (
    "accel_tasks.engines",
    "accel_tasks.training",
    "accel_tasks.runs",
    "accel_tasks.evaluation",
    "accel_tasks.features",
    "accel_tasks.reporting",
    "accel_tasks.models.adapters",
    "accel_tasks.preflight",
)
# The parts of the package (a subpackage or a top-level module), lowest first, as docs/design.md draws them: a part
# imports only parts of its own layer or below. Why: "no circles" alone allows a low part to reach up (the engines
# importing preflight, the runs importing models that import the runs' manifest); layers keep each part reusable
# without what is built on it.
LAYERS = (
    ("errors", "files", "manifest", "log", "metrics"),
    ("config",),
    ("engines",),
    ("models", "data"),
    ("settings", "recipe_types", "generation", "decoding"),
    ("recipe_contract", "text2text", "recipe"),
    ("recipes", "registry", "help", "features"),
    ("runs",),
    ("evaluation",),
    ("preflight",),
    ("reporting",),
    ("training",),
    ("run", "__main__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Modules of the package; the shipped metric scripts are loaded by evaluate, not imported."""
    return {
        module_name(p): p
        for p in PACKAGE.rglob("*.py")
        if "metrics" not in p.relative_to(PACKAGE).parts[:1] or p.name in ("__init__.py",)
    }


def imports_of(name: str, path: Path) -> set[str]:
    """Every module name imported anywhere in the file, absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def own_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(name, path):
            # ``from . import X`` names a module X or a name defined in the package: keep what is a module.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_graph_is_read():
    """The checks below would pass on an empty graph: make sure it holds the edges we know of."""
    graph = own_graph()
    assert "accel_tasks.errors" in graph["accel_tasks.config.merge"]
    assert "accel_tasks.recipe" in graph["accel_tasks.recipes.summarization"]
    assert "accel_tasks.runs.export" in graph["accel_tasks.training.finish"]


def part_of(module: str) -> str:
    """``accel_tasks.engines.accelerator`` -> ``engines``; ``accel_tasks.log`` -> ``log``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "accel_tasks"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a part by a part of a lower layer, as ``module -> module``."""
    layer = {part: level for level, parts in enumerate(LAYERS) for part in parts}
    return sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if part_of(source) != "accel_tasks" and layer[part_of(target)] > layer[part_of(source)]
    )


def test_every_part_has_a_layer():
    parts = {part_of(name) for name in own_graph()} - {"accel_tasks"}
    placed = {part for layer in LAYERS for part in layer}
    assert parts <= placed, f"parts with no layer in LAYERS (and docs/design.md): {sorted(parts - placed)}"


def test_no_part_imports_a_higher_layer():
    upward = upward_imports(own_graph())
    assert not upward, f"imports of a higher layer (see LAYERS and docs/design.md): {upward}"


def test_upward_imports_are_found():
    graph = {"accel_tasks.engines.accelerator": {"accel_tasks.preflight"}, "accel_tasks.preflight": set()}
    assert upward_imports(graph) == ["accel_tasks.engines.accelerator -> accel_tasks.preflight"]


def test_no_import_circles():
    cycle = find_cycle(own_graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_ground_floors_import_nothing_above_them():
    graph = own_graph()
    assert graph["accel_tasks.errors"] == set()
    config_package = {name for name in graph if name == "accel_tasks.config" or name.startswith("accel_tasks.config.")}
    outside = set().union(*(graph[name] for name in config_package)) - config_package
    assert outside == {"accel_tasks.errors"}, (
        f"the config package is a ground floor: it imports only itself and errors, not {sorted(outside)}"
    )
    assert graph["accel_tasks.files"] == set()


def test_the_loop_never_imports_a_recipe():
    graph = own_graph()
    training = sorted(name for name in graph if name.startswith("accel_tasks.training."))
    assert "accel_tasks.training.loop" in training and "accel_tasks.training.session" in training
    for module in (
        *training,
        "accel_tasks.evaluation.eval_pass",
        "accel_tasks.runs.checkpoint",
        "accel_tasks.runs.export",
        "accel_tasks.preflight",
        "accel_tasks.engines.accelerator",
        "accel_tasks.models.adapters",
        "accel_tasks.data.raw",
    ):
        leaks = {m for m in graph[module] if m.startswith("accel_tasks.recipes")}
        assert not leaks, f"{module} imports recipe code {sorted(leaks)}"


@pytest.mark.parametrize("name", sorted(n for n in package_modules() if n.startswith("accel_tasks.recipes")))
def test_recipes_stay_out_of_the_machinery(name):
    path = package_modules()[name]
    imported = imports_of(name, path)
    third_party = {m for m in imported if m.split(".")[0] in RECIPE_BANNED}
    assert not third_party, f"{name} imports {sorted(third_party)}; recipes get what they need through their hooks"
    own = {m for m in imported if any(m == b or m.startswith(b + ".") for b in RECIPE_BANNED_OWN)}
    assert not own, f"{name} imports loop machinery {sorted(own)}"
