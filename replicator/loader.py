"""Reading the config file and the inventory (files or folders of multi-document YAML), keeping
where every object came from so each problem can be reported with file, line, object and field."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from replicator.config import Config
from replicator.inventory import KINDS, MeshObject

_YAML_SUFFIXES = (".yaml", ".yml")
# libyaml's loader when PyYAML was built with it (10x faster); both keep line numbers in nodes.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Source:
    """Where an object was read: its file and its YAML node (for field line numbers)."""

    file: str
    node: yaml.Node | None

    def line(self, path: Iterable[str | int] = ()) -> int | None:
        return locate(self.node, path)


@dataclass
class LoadedObject:
    obj: Any
    source: Source
    label: str


@dataclass
class Loaded:
    """Everything read from disk, unvalidated across references."""

    config_path: Path
    config: Config
    config_source: Source
    objects: list[LoadedObject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(str(path), None, None, None, f"cannot read: {e}")]
    docs: list[tuple[Any, yaml.Node]] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                docs.append((loader.construct_document(node), node))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(e, "problem", None) or str(e)
        return docs, [Problem(str(path), line, None, None, f"invalid YAML: {reason}")]
    finally:
        loader.dispose()
    return docs, []


def default_config_path() -> Path:
    return Path(os.environ.get("REPLICATOR_CONFIG") or "replicator.yaml")


def _validation_problems(
    err: ValidationError, file: str, node: yaml.Node | None, obj: str | None, skip: int = 0
) -> list[Problem]:
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])[skip:]
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field is missing"
        problems.append(Problem(file, locate(node, loc), obj, field_path(loc) or None, msg))
    return problems


def load_config(path: Path) -> tuple[Config | None, Source, list[Problem]]:
    docs, problems = read_yaml_documents(path)
    source = Source(str(path), docs[0][1] if docs else None)
    if problems:
        return None, source, problems
    if len(docs) != 1 or not isinstance(docs[0][0], dict):
        return None, source, [Problem(str(path), 1, None, None, "the config file must be one YAML mapping")]
    data = apply_env_overrides(docs[0][0], os.environ)
    try:
        return Config.model_validate(data), source, []
    except ValidationError as e:
        return None, source, _validation_problems(e, str(path), source.node, None)


def apply_env_overrides(data: dict[str, Any], environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """``REPLICATOR_<PATH>`` overrides a config key: ``__`` separates levels, ``SNAKE_CASE`` becomes
    camelCase (``REPLICATOR_SCHEDULE__INTERVAL=5m``, ``REPLICATOR_REPLICATION__MAX_DELETIONS=10``).
    Values are read as YAML scalars."""
    out = dict(data)
    for name, raw in sorted(environ.items()):
        if (
            not name.startswith("REPLICATOR_")
            or name == "REPLICATOR_CONFIG"
            or name.startswith("REPLICATOR_KEY_")
        ):
            continue
        keys = [_camel(k) for k in name[len("REPLICATOR_") :].split("__") if k]
        if not keys:
            continue
        target = out
        for k in keys[:-1]:
            child = target.get(k)
            child = dict(child) if isinstance(child, dict) else {}
            target[k] = child
            target = child
        try:
            target[keys[-1]] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            target[keys[-1]] = raw
    return out


def _camel(snake: str) -> str:
    head, *rest = snake.lower().split("_")
    return head + "".join(w.capitalize() for w in rest)


_OBJECT = TypeAdapter(MeshObject)


def _label(data: Any) -> str:
    if not isinstance(data, dict):
        return "object"
    kind = data.get("kind", "object")
    raw_meta = data.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    ident = "/".join(
        str(meta[k])
        for k in ("ownedByWorkspace", "ownedByProject", "name", "platformIdentifier")
        if meta.get(k)
    )
    return f"{kind} {ident}".strip()


def inventory_files(base: Path, entries: Sequence[str]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for entry in entries:
        p = Path(entry) if Path(entry).is_absolute() else base / entry
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in _YAML_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), None, None, None, "inventory file or folder does not exist"))
    return files, problems


def load_objects(files: Sequence[Path]) -> tuple[list[LoadedObject], list[Problem]]:
    objects: list[LoadedObject] = []
    problems: list[Problem] = []
    for f in files:
        docs, doc_problems = read_yaml_documents(f)
        problems += doc_problems
        for data, node in docs:
            if data is None:
                continue
            label = _label(data)
            if not isinstance(data, dict):
                problems.append(
                    Problem(str(f), locate(node, ()), None, None, "a meshObject must be a mapping")
                )
                continue
            if data.get("kind") not in KINDS:
                problems.append(
                    Problem(
                        str(f),
                        locate(node, ["kind"]),
                        label,
                        "kind",
                        f"unknown kind {data.get('kind')!r} (known: {', '.join(KINDS)})",
                    )
                )
                continue
            try:
                obj = _OBJECT.validate_python(data)
            except ValidationError as e:
                problems += _validation_problems(e, str(f), node, label, skip=1)
                continue
            objects.append(LoadedObject(obj, Source(str(f), node), label))
    return objects, problems


def load(config_path: Path | None = None) -> Loaded:
    """Read config and inventory. Raises InputError with every problem found while reading; the
    cross-reference checks live in :mod:`replicator.validate`."""
    path = config_path or default_config_path()
    if not path.is_file():
        raise InputError([Problem(str(path), None, None, None, "config file does not exist")])
    config, source, problems = load_config(path)
    if config is None:
        raise InputError(problems)
    files, file_problems = inventory_files(path.parent, config.inventory)
    objects, object_problems = load_objects(files)
    return Loaded(path, config, source, objects, file_problems + object_problems)


def resolve_state_url(url: str, config_path: Path) -> str:
    """A relative SQLite path in the config is relative to the config file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        rel = url[len(prefix) :]
        return prefix + str((config_path.parent / rel).resolve())
    return url
