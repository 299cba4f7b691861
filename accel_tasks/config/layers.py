"""Reading one merge layer from where users write settings: ``key=value`` arguments or a YAML file.

A layer is an untyped DictConfig; ``merge.build_config`` checks its keys against the schema, so a
layer here only has to be well-formed. A YAML file is read as ``yaml.safe_load`` reads it, with one refusal
more (a key written twice), and every fault of the file is one ConfigError naming it, the line and the column.
"""

from __future__ import annotations

import typing
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accel_tasks.config.groups import NoOptions, RunConfig
from accel_tasks.errors import ConfigError, first_line


def parse_overrides(args: typing.Sequence[str], recipe_options: type = NoOptions) -> DictConfig:
    """Turn ``a.b=c`` arguments into one config layer.

    Values parse as YAML (numbers, lists, booleans), except for text settings, which are taken
    verbatim so that ``task.source_prefix=summarize: `` stays a string.
    """
    layer = OmegaConf.create({})
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith("-") or " " in key:
            raise ConfigError(f"malformed override {arg!r}: expected key=value, e.g. train.lr=3e-4")
        try:
            if _is_text_field(recipe_options, key):
                item = OmegaConf.create({})
                OmegaConf.update(item, key, None if value in ("null", "None", "~") else value, force_add=True)
            else:
                item = OmegaConf.from_dotlist([f"{key}={value}"])
            layer = OmegaConf.merge(layer, item)
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(f"malformed override {arg!r}: {first_line(exc)}") from None
    return layer


def _is_text_field(recipe_options: type, dotted: str) -> bool:
    """Whether ``dotted`` names a str (or Optional[str]) setting of the schema."""
    node: Any = RunConfig
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        if node is RunConfig and part == "task":
            node = recipe_options
            continue
        if not is_dataclass(node):
            return False
        hint = typing.get_type_hints(node).get(part)
        if hint is None:
            return False
        if index == len(parts) - 1:
            return hint is str or hint == Optional[str]
        node = hint
    return False


def load_yaml_layer(path: str | Path, what: str) -> DictConfig:
    """Read a YAML config file (``safe_load``'s loader, duplicate keys refused) as one merge layer.

    ``what`` names the file in errors. Every fault of the file itself (unreadable, not UTF-8 text, a YAML
    error, a key written twice) is a ConfigError naming the file and where in it, because a traceback from
    the YAML reader or a silently dropped duplicate would send the user hunting.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; pass the YAML file itself (e.g. {path}/config.yaml)")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist; pass an existing YAML file")
    where = f"{what} {str(path)!r}"
    data = read_yaml_text(_utf8_text(path, where), where) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of config keys, got {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except RecursionError:
        raise ConfigError(
            f"{where} holds an alias inside itself; a config is plain data: write the values out"
        ) from None
    except OmegaConfBaseException as exc:  # e.g. an unquoted date
        key = f" at {exc.full_key}" if getattr(exc, "full_key", None) else ""
        raise ConfigError(f"{where} holds a value a config cannot take{key}: {first_line(exc)}; quote it") from None


def read_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, but a key written twice in one mapping is an error, and so is any YAML error,
    each naming ``where``, the line and the column.

    Why: safe_load keeps the last of two equal keys without a word, so an edited file can silently run
    with a value the user thought was gone; and its errors print over several lines.
    """
    try:
        # safe_load's own loader (plain data, no arbitrary objects), used a step at a time to see the nodes.
        loader = yaml.SafeLoader(text)  # checks every character: one YAML refuses fails here
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _refuse_duplicate_keys(node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {_describe_yaml_error(exc)}; fix that line") from None
    except yaml.reader.ReaderError as exc:
        line, column = _line_and_column(text, exc.position)
        raise ConfigError(
            f"{where} holds character #x{exc.character:04x} at line {line}, column {column}, which YAML does not "
            "allow; is it a binary file? A config file is YAML text: save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {_one_line(first_line(exc))}") from None


def _utf8_text(path: Path, where: str) -> str:
    """The file's text; a binary or non-UTF-8 file is one line naming the first bad byte's line and column."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{where} cannot be read ({type(exc).__name__}: {exc.strerror or exc}); check the path"
        ) from None
    if b"\x00" in raw:
        line, column = _line_and_column(raw, raw.index(b"\x00"))
        raise ConfigError(
            f"{where} is binary, not YAML text (a NUL byte at line {line}, column {column}; UTF-16 has them too): "
            "pass the config file itself and save it as UTF-8"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(raw, exc.start)
        raise ConfigError(
            f"{where} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
            f"(byte offset {exc.start}) cannot be decoded; save it as UTF-8"
        ) from None


def _line_and_column(content: str | bytes, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``content`` (a column counts bytes in bytes)."""
    newline = b"\n" if isinstance(content, bytes) else "\n"
    before = content[:offset]
    return before.count(newline) + 1, offset - (before.rfind(newline) + 1) + 1


def _refuse_duplicate_keys(root: yaml.Node, where: str) -> None:
    """Raise on the first mapping, anywhere in the document, that holds a key twice (merge keys ``<<`` aside:
    overriding a merged key is what they are for)."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen_nodes: set[int] = set()
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen_nodes:  # an alias points back at a node already checked
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{prefix}[{index}]") for index, item in enumerate(node.value))
        if not isinstance(node, yaml.MappingNode):
            continue
        first_lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            line = key_node.start_mark.line + 1
            if (key_node.tag, key_node.value) in first_lines:
                raise ConfigError(
                    f"{where} sets {dotted!r} twice (line {first_lines[key_node.tag, key_node.value]} and line "
                    f"{line}); YAML would keep only the last: keep the one you mean and delete the other"
                )
            first_lines[key_node.tag, key_node.value] = line
            stack.append((value_node, dotted))


def _describe_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    """``line L, column C: PROBLEM (CONTEXT at line L', column C')``, 1-based, from the error's marks."""
    problem = _one_line(exc.problem or first_line(exc))
    if "'\\t'" in problem:
        problem += " (YAML indents with spaces, never tabs)"
    mark = exc.problem_mark or exc.context_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
    context = exc.context_mark
    if exc.context and context is not None and (context.line, context.column) != (mark.line, mark.column):
        text += f" ({_one_line(exc.context)} at line {context.line + 1}, column {context.column + 1})"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())
