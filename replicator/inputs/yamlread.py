"""Reading YAML (and JSON, a subset) with every node kept, for problems located by file and
line: the safe loader (libyaml's when PyYAML has it), refusing duplicate keys and nesting deeper
than MAX_DEPTH before it recurses; the problem types every input check reports with."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader when PyYAML was built with it (10x faster); both keep line numbers in nodes.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader, refusing a mapping that names one key twice: YAML 1.2 requires keys to be
    unique, and PyYAML would keep the last value silently (``euid: a`` then ``euid: b``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with the input, located as precisely as the input allows."""

    file: str
    line: int | None
    obj: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        parts = [where]
        if self.obj:
            parts.append(self.obj)
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + ": " + self.message


class InputError(Exception):
    """The config or the inventory cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        # What is wrong with a whole file (it cannot be read, does not exist) first: it is the
        # cause of what follows (the references to the objects it would have held).
        self.problems = sorted(problems, key=lambda p: (p.line is not None, p.file, p.line or 0, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def locate(node: yaml.Node | None, path: Iterable[str | int]) -> int | None:
    """Line (1-based) of the deepest node ``path`` reaches; parts that do not match (pydantic's
    union tags) are skipped."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if getattr(key, "value", None) == part:
                    node, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def read_yaml_documents(path: Path) -> tuple[list[tuple[Any, yaml.Node]], list[Problem]]:
    """Every document of a YAML file with its node; a syntax error is a located problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return [], [Problem(str(path), None, None, None, f"cannot read: {e}")]
    return parse_yaml_bytes(raw, str(path))


def parse_yaml_bytes(raw: bytes, name: str) -> tuple[list[tuple[Any, yaml.Node]], list[Problem]]:
    """Every document of YAML (or JSON, a subset) text named ``name`` in messages."""
    path = name
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = raw[: e.start].count(b"\n") + 1
        return [], [Problem(str(path), where, None, None, f"cannot read: {e}")]
    deep = too_deep(text)
    if deep is not None:
        return [], [_deep_problem(path, deep)]
    docs: list[tuple[Any, yaml.Node]] = []
    node: yaml.Node | None = None
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                docs.append((loader.construct_document(node), node))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        position = getattr(e, "position", None)  # a ReaderError (a character YAML does not allow)
        if mark is not None:
            line: int | None = mark.line + 1
        elif isinstance(position, int):
            line = text[:position].count("\n") + 1
        else:
            line = None
        reason = getattr(e, "problem", None) or str(e)
        if _is_libyaml_depth_limit(reason):
            return docs, [_deep_problem(path, line or 1)]
        return docs, [Problem(str(path), line, None, None, f"invalid YAML: {reason}")]
    except (ValueError, RecursionError) as e:  # an int of thousands of digits (Python's limit)
        line = node.start_mark.line + 1 if node is not None else None
        return docs, [Problem(str(path), line, None, None, f"invalid YAML: {str(e) or type(e).__name__}")]
    finally:
        loader.dispose()
    return docs, []


MAX_DEPTH = 100
"""Nesting levels a YAML file may have (meshObjects need fewer than ten). Composing a document is
recursive in libyaml's binding: tens of thousands of ``[`` crash the process (segfault)."""
_BRACKETS = re.compile(r"[\[\]{}]")
# Quoted scalars (they start at a token boundary) and comments: their brackets do not nest.
_NOT_STRUCTURE = re.compile(r"""(?<![^\s\[{,:])(?:"(?:[^"\\]|\\.)*"|'(?:[^']|'')*')|(?<!\S)#[^\n]*""")


def too_deep(text: str) -> int | None:
    """The line where ``text`` nests deeper than MAX_DEPTH, or None. A cheap estimate of the flow
    nesting first (block nesting needs indentation, so it cannot be deep in a small file); only
    when it says "deep" are the events parsed (iteratively) for the exact depth and line."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = estimate = 0
    for ch in _BRACKETS.findall(_NOT_STRUCTURE.sub("", text)):
        depth = depth + 1 if ch in "[{" else max(depth - 1, 0)
        estimate = max(estimate, depth)
        if estimate > MAX_DEPTH:
            break
    if estimate <= MAX_DEPTH:
        return None
    loader = _Loader(text)
    depth = 0
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return None
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    return int(mark.line) + 1 if mark is not None else 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as e:
        if _is_libyaml_depth_limit(getattr(e, "problem", None) or str(e)):
            mark = getattr(e, "problem_mark", None)
            return int(mark.line) + 1 if mark is not None else 1
        return None  # composing reports it, with its line
    finally:
        loader.dispose()


def _is_libyaml_depth_limit(reason: str) -> bool:
    """libyaml 0.2.6 (bundled since PyYAML 6.0.4) stops at 1,000 levels by itself, with its own
    message, and its scanner can give up before our event pass has seen 100 levels: the same input
    gets the same message whichever parser stops first."""
    return "maximum nesting depth" in reason


def _deep_problem(path: Path | str, line: int) -> Problem:
    return Problem(str(path), line, None, None, f"nested deeper than {MAX_DEPTH} levels")
