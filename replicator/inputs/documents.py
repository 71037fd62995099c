"""From YAML documents to validated meshObjects: each inventory file read by the fast path or
the located loader, each document validated by its kind's model, and where each object came from
kept for the lines of problems (a file's nodes are read again only when a problem needs one)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from replicator.core.inventory import (
    KINDS,
    MeshProject,
    MeshProjectBinding,
    MeshTenant,
    MeshUser,
    MeshUserGroup,
    MeshWorkspace,
    Obj,
)
from replicator.inputs.fastyaml import fast_documents
from replicator.inputs.yamlread import Problem, field_path, locate, parse_yaml_bytes, too_deep


class FileNodes:
    """The YAML nodes of one inventory file, for the lines of its problems: read by the located
    loader the first time a problem needs a line (the fast path keeps no node per value)."""

    __slots__ = ("_nodes", "digest", "path")

    def __init__(self, path: str, digest: int, nodes: list[yaml.Node] | None = None) -> None:
        self.path, self.digest = path, digest
        self._nodes: list[yaml.Node] | None = nodes

    def node(self, index: int) -> yaml.Node | None:
        """The node of the file's ``index``-th document (None: the file changed since it was read,
        or cannot be read now: no line rather than a wrong one)."""
        if self._nodes is None:
            try:
                raw = Path(self.path).read_bytes()
            except OSError:
                raw = b""
            docs = parse_yaml_bytes(raw, self.path)[0] if zlib.crc32(raw) == self.digest else []
            self._nodes = [node for _, node in docs]
        return self._nodes[index] if 0 <= index < len(self._nodes) else None


class Source:
    """Where an object was read: its file and its YAML node (for field line numbers), or the
    file's :class:`FileNodes` and the object's document index there."""

    __slots__ = ("file", "index", "node", "nodes")

    def __init__(
        self, file: str, node: yaml.Node | None = None, nodes: FileNodes | None = None, index: int = 0
    ) -> None:
        self.file, self.node, self.nodes, self.index = file, node, nodes, index

    def line(self, path: Iterable[str | int] = ()) -> int | None:
        node = self.node if self.node is not None or self.nodes is None else self.nodes.node(self.index)
        return locate(node, path)


class LoadedObject:
    """A validated meshObject, where it was read, and its label in messages. An object of an
    inventory file keeps the file's :class:`FileNodes` and its document index, and makes its
    :class:`Source` when asked (a million objects, a million fewer objects kept)."""

    __slots__ = ("_index", "_label", "_where", "obj")

    def __init__(
        self, obj: Any, source: Source | FileNodes, label: str | None = None, index: int = 0
    ) -> None:
        self.obj, self._where, self._label, self._index = obj, source, label, index

    @property
    def source(self) -> Source:
        where = self._where
        return where if isinstance(where, Source) else Source(where.path, None, where, self._index)

    @property
    def label(self) -> str:
        """``kind workspace/project/name/platform`` (the parts the object has), as :func:`_label`
        gives it for the object's document; computed when a message needs it."""
        if self._label is None:
            m = self.obj.metadata
            parts = (getattr(m, a, None) for a in ("owned_by_workspace", "owned_by_project", "name",
                                                    "platform_identifier"))  # fmt: skip
            self._label = f"{self.obj.kind} {'/'.join(str(p) for p in parts if p)}".strip()
        return self._label


@dataclass(frozen=True)
class FileRead:
    """What one inventory file gave: kept so that the next load reuses it while the file's bytes
    are the same (the daemon's reload after an edit of one file parses that file only)."""

    size: int
    digest: int
    objects: list[LoadedObject]
    problems: list[Problem]


_MESSAGES = {
    # a model's (the config's) and a pydantic dataclass's (a meshObject's) words for one thing
    "extra_forbidden": "unknown field",
    "unexpected_keyword_argument": "unknown field",
    "missing": "required field is missing",
    "missing_keyword_argument": "required field is missing",
    "model_type": "must be a mapping",
    "dataclass_type": "must be a mapping",
}


def _validation_problems(
    err: ValidationError, file: str, line: Callable[[Sequence[str | int]], int | None], obj: str | None
) -> list[Problem]:
    """One problem per error of ``err``, located in ``file`` by ``line`` (of a field's path)."""
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        msg = _MESSAGES.get(e["type"], e["msg"])
        problems.append(Problem(file, line(loc), obj, field_path(loc) or None, msg))
    return problems


_MODELS: dict[str, type[Obj]] = dict(
    zip(
        KINDS,
        (MeshUser, MeshUserGroup, MeshWorkspace, MeshProject, MeshProjectBinding, MeshTenant),
        strict=True,
    )
)
"""The model of each kind: a document is validated by its kind's model directly (a union of six
models is several times slower to dispatch in pydantic)."""


def _short(value: Any, limit: int = 80) -> str:
    """A value read from YAML for a message, bounded: only scalars are shown (YAML aliases turn a
    small file into an exponentially large structure, whose ``str`` would never finish)."""
    text = repr(value) if isinstance(value, str | int | float | bool | None) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _label(data: Any) -> str:
    if not isinstance(data, dict):
        return "object"
    kind = data.get("kind", "object")
    raw_meta = data.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    ident = "/".join(
        str(meta[k]) if isinstance(meta[k], str | int | float | bool) else _short(meta[k])
        for k in ("ownedByWorkspace", "ownedByProject", "name", "platformIdentifier")
        if meta.get(k)
    )
    kind_text = kind if isinstance(kind, str) else _short(kind)
    return f"{kind_text} {ident}".strip()


def load_objects(
    files: Sequence[Path], previous: Mapping[str, FileRead] | None = None
) -> tuple[list[LoadedObject], list[Problem]]:
    """The meshObjects of ``files``. A file is read by the fast path when it can be
    (:mod:`replicator.inputs.fastyaml`), and again by the located loader when it cannot, or when
    anything in it is wrong: every problem is reported as the located loader reads the file."""
    return flatten(read_files(files, previous))


def flatten(read: Mapping[str, FileRead]) -> tuple[list[LoadedObject], list[Problem]]:
    """The objects and the problems of every file read, in file order."""
    return [lo for r in read.values() for lo in r.objects], [p for r in read.values() for p in r.problems]


def read_files(files: Sequence[Path], previous: Mapping[str, FileRead] | None = None) -> dict[str, FileRead]:
    """Each of ``files`` read (see :func:`load_objects`), by path; a file whose bytes are those
    ``previous`` (an earlier load's) read gives the same objects again, without parsing."""
    out: dict[str, FileRead] = {}
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as e:
            out[str(f)] = FileRead(0, 0, [], [Problem(str(f), None, None, None, f"cannot read: {e}")])
            continue
        digest = zlib.crc32(raw)
        before = previous.get(str(f)) if previous is not None else None
        if before is not None and before.size == len(raw) and before.digest == digest:
            out[str(f)] = before
            continue
        out[str(f)] = _read_file(str(f), raw, digest)
    return out


def _read_file(name: str, raw: bytes, digest: int) -> FileRead:
    data = _fast(raw)
    if data is not None:
        nodes = FileNodes(name, digest)  # read again only for a problem's line
        objects, problems = objects_from_documents([(d, None) for d in data], name, nodes)
        if not problems:
            return FileRead(len(raw), digest, objects, [])
    docs, doc_problems = parse_yaml_bytes(raw, name)
    nodes = FileNodes(name, digest, [node for _, node in docs])
    objects, problems = objects_from_documents([(d, None) for d, _ in docs], name, nodes)
    return FileRead(len(raw), digest, objects, doc_problems + problems)


def _fast(raw: bytes) -> list[Any] | None:
    """The documents of a file by the fast path (:mod:`replicator.inputs.fastyaml`), or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if too_deep(text) is not None else fast_documents(text)


def objects_from_documents(
    docs: Sequence[tuple[Any, yaml.Node | None]], file: str, nodes: FileNodes | None = None
) -> tuple[list[LoadedObject], list[Problem]]:
    """Typed meshObjects from parsed documents; every problem located in ``file`` (by the
    document's node, or by ``nodes``, the file's, when the documents came without)."""
    objects: list[LoadedObject] = []
    problems: list[Problem] = []
    for index, (data, given) in enumerate(docs):
        if data is None:
            continue
        kind = data.get("kind") if isinstance(data, dict) else None
        model = _MODELS.get(kind) if isinstance(kind, str) else None
        if model is not None:
            try:
                obj = model.model_validate(data)
            except ValidationError as e:
                line = Source(file, given, nodes, index).line
                problems += _validation_problems(e, file, line, _label(data))
                continue
            where = nodes if given is None and nodes is not None else Source(file, given)
            objects.append(LoadedObject(obj, where, None, index))
        elif not isinstance(data, dict):
            at = Source(file, given, nodes, index).line()
            problems.append(Problem(file, at, None, None, "a meshObject must be a mapping"))
        else:
            problems.append(
                Problem(
                    file,
                    Source(file, given, nodes, index).line(["kind"]),
                    _label(data),
                    "kind",
                    f"unknown kind {_short(kind)} (known: {', '.join(KINDS)})",
                )
            )
    return objects, problems
