"""Reading the config file and the inventory (files or folders of multi-document YAML), keeping
where every object came from so each problem can be reported with file, line, object and field."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from replicator.core.config import Config
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
from replicator.inputs.environment import overriding, with_overrides
from replicator.inputs.fastyaml import fast_documents
from replicator.inputs.yamlread import MAX_DEPTH as MAX_DEPTH
from replicator.inputs.yamlread import InputError as InputError
from replicator.inputs.yamlread import Problem as Problem
from replicator.inputs.yamlread import field_path as field_path
from replicator.inputs.yamlread import locate as locate
from replicator.inputs.yamlread import parse_yaml_bytes as parse_yaml_bytes
from replicator.inputs.yamlread import read_yaml_documents as read_yaml_documents
from replicator.inputs.yamlread import too_deep
from replicator.memory import bulk

if TYPE_CHECKING:
    from state import Store

_YAML_SUFFIXES = (".yaml", ".yml")


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


@dataclass
class Loaded:
    """Everything read from disk, unvalidated across references."""

    config_path: Path
    config: Config
    config_source: Source
    objects: list[LoadedObject] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    file_keys: frozenset[tuple[str, str]] = frozenset()
    """(kind, object key) of every named object read from a file (read-only through the API)."""
    deprovisioned_users: frozenset[str] = frozenset()
    """Users an identity source no longer has: references to them are not errors; they get no access."""
    store_revision: int | None = None
    """``Store.objects_revision()`` when the stored objects were read (None: not read)."""
    file_stamps: dict[str, int] | None = None
    """The config and inventory files' modification times, taken before they were read (see
    :func:`file_stamps`; None: not from files)."""

    def files_unchanged(self) -> bool:
        """Whether the config and inventory files are still those this was read from (same files,
        same modification times)."""
        return (
            self.file_stamps is not None and input_stamps(self.config_path, self.config) == self.file_stamps
        )


def input_stamps(config_path: Path, config: Config | None) -> dict[str, int]:
    """:func:`file_stamps` of the config file and of the inventory files ``config`` names now."""
    files = inventory_files(config_path.parent, config.inventory)[0] if config is not None else []
    return file_stamps([config_path, *files])


def file_stamps(paths: Iterable[Path]) -> dict[str, int]:
    """Path -> modification time (ns) of each of ``paths`` that exists."""
    stamps = {}
    for p in paths:
        with contextlib.suppress(OSError):
            stamps[str(p)] = p.stat().st_mtime_ns
    return stamps


def default_config_path(start: Path | None = None) -> Path:
    """``$REPLICATOR_CONFIG``, else the ``replicator.yaml`` of the working folder or of the
    nearest folder above it, the way git finds ``.git`` (a command run in ``inventory/teams`` uses
    the project's config); else ``replicator.yaml`` (which then does not exist, and says so)."""
    if os.environ.get("REPLICATOR_CONFIG"):
        return Path(os.environ["REPLICATOR_CONFIG"])
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "replicator.yaml"
        if candidate.is_file():
            return candidate if folder != here else Path("replicator.yaml")
    return Path("replicator.yaml")


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


def load_config(path: Path) -> tuple[Config | None, Source, list[Problem]]:
    docs, problems = read_yaml_documents(path)
    source = Source(str(path), docs[0][1] if docs else None)
    if problems:
        return None, source, problems
    if len(docs) != 1 or not isinstance(docs[0][0], dict):
        return None, source, [Problem(str(path), 1, None, None, "the config file must be one YAML mapping")]
    data, overridden = with_overrides(docs[0][0], os.environ)
    try:
        return Config.model_validate(data), source, []
    except ValidationError as e:
        problems = _validation_problems(e, str(path), source.line, None)
        for i, error in enumerate(e.errors(include_url=False)):  # one problem per error, in order
            name = overriding(tuple(error["loc"]), overridden)
            if name is not None:  # the value came from the environment: no line of the file has it
                problems[i] = dataclasses.replace(problems[i], file=f"environment variable {name}", line=None)
        return None, source, problems


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


def inventory_files(base: Path, entries: Sequence[str]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for entry in entries:
        p = Path(entry) if Path(entry).is_absolute() else base / entry
        if p.is_dir():
            # Hidden entries are skipped: a ConfigMap volume holds every file twice, once under
            # the kubelet's `..<timestamp>/` directory (and `..data`).
            files += sorted(
                f
                for f in p.rglob("*")
                if f.suffix in _YAML_SUFFIXES
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), None, None, None, "inventory file or folder does not exist"))
    return files, problems


def load_objects(files: Sequence[Path]) -> tuple[list[LoadedObject], list[Problem]]:
    """The meshObjects of ``files``. A file is read by the fast path when it can be
    (:mod:`replicator.inputs.fastyaml`), and again by the located loader when it cannot, or when
    anything in it is wrong: every problem is reported as the located loader reads the file."""
    objects: list[LoadedObject] = []
    problems: list[Problem] = []
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as e:
            problems.append(Problem(str(f), None, None, None, f"cannot read: {e}"))
            continue
        data = _fast(raw)
        if data is not None:
            nodes = FileNodes(str(f), zlib.crc32(raw))  # read again only for a problem's line
            more, more_problems = objects_from_documents([(d, None) for d in data], str(f), nodes)
            if not more_problems:
                objects += more
                continue
        docs, doc_problems = parse_yaml_bytes(raw, str(f))
        nodes = FileNodes(str(f), zlib.crc32(raw), [node for _, node in docs])
        more, more_problems = objects_from_documents([(d, None) for d, _ in docs], str(f), nodes)
        objects += more
        problems += doc_problems + more_problems
    return objects, problems


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


STORE_FILE = "store"
"""``Problem.file`` / ``Source.file`` prefix of objects read from the state store: ``store:<kind>/<key>``."""


def stored_objects(
    store: Store, shadowed: set[tuple[str, str]]
) -> tuple[list[LoadedObject], set[str], list[Problem]]:
    """The meshObjects kept in the state store, minus those a file defines (``shadowed``: (kind,
    key)); plus the names of deprovisioned users (bindings may still name them)."""
    from replicator.core.inventory import object_key

    objects: list[LoadedObject] = []
    problems: list[Problem] = []
    deprovisioned: set[str] = set()
    for stored in store.list_objects(include_deprovisioned=True):
        if (stored.kind, stored.key) in shadowed:
            continue
        if stored.deprovisioned_at is not None:
            if stored.kind == "meshUser":
                deprovisioned.add(stored.key)
            continue
        where = f"{STORE_FILE}:{stored.kind}/{stored.key}"
        loaded, found = objects_from_documents([(dict(stored.document), None)], where)
        problems += found
        for lo in loaded:
            if object_key(lo.obj) != stored.key:  # written by hand into the table
                problems.append(Problem(where, None, lo.label, "metadata", "does not match its key"))
                continue
            objects.append(lo)
    return objects, deprovisioned, problems


def load(config_path: Path | None = None, store: Store | None = None) -> Loaded:
    """Read config and inventory (with ``storedObjects``, the objects kept in ``store``, or in the
    config's state store when none is given). Raises InputError with every problem found while reading; the
    cross-reference checks live in :mod:`replicator.inputs.validate`."""
    with bulk():
        return _load(config_path or default_config_path(), store)


def _load(path: Path, store: Store | None) -> Loaded:
    if not path.is_file():
        why = (
            f"is a folder: name the config file in it (-c {path / 'replicator.yaml'})"
            if path.is_dir()
            else "config file does not exist"
        )
        raise InputError([Problem(str(path), None, None, None, why)])
    stamps = file_stamps([path])
    config, source, problems = load_config(path)
    if config is None:
        # Every problem at once: the inventory files' own (syntax, fields) beside the config's.
        # Checks across objects need a valid config and come once it is.
        entries = _inventory_entries(source.node)
        files, file_problems = inventory_files(path.parent, entries) if entries else ([], [])
        raise InputError(problems + file_problems + load_objects(files)[1])
    files, file_problems = inventory_files(path.parent, config.inventory)
    stamps |= file_stamps(files)
    objects, object_problems = load_objects(files)
    loaded = Loaded(path, config, source, objects, file_problems + object_problems, file_stamps=stamps)
    if config.stored_objects:
        _add_stored(loaded, store)
    return loaded


def _inventory_entries(node: yaml.Node | None) -> list[str]:
    """The ``inventory`` entries of a config file that did not validate, when they are a list of
    strings (else none: that is one of the config's problems)."""
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "inventory" and isinstance(value, yaml.SequenceNode):
            items = [v.value for v in value.value if isinstance(v, yaml.ScalarNode)]
            return items if len(items) == len(value.value) else []
    return []


def _add_stored(loaded: Loaded, store: Store | None) -> None:
    from replicator.core.inventory import object_key

    shadowed: set[tuple[str, str]] = set()
    for lo in loaded.objects:
        key = object_key(lo.obj)
        if key is not None:
            shadowed.add((lo.obj.kind, key))
    loaded.file_keys = frozenset(shadowed)
    from state import StoreError

    own = store is None
    try:
        if store is None:
            store = open_state(loaded.config, loaded.config_path)
        try:
            loaded.store_revision = store.objects_revision()
            objects, deprovisioned, problems = stored_objects(store, shadowed)
        finally:
            if own:
                store.close()
    except StoreError as e:
        loaded.problems.append(
            Problem(
                str(loaded.config_path),
                loaded.config_source.line(["storedObjects"]),
                None,
                "storedObjects",
                f"the stored meshObjects cannot be read: {e}",
            )
        )
        return
    loaded.objects += objects
    loaded.deprovisioned_users = frozenset(deprovisioned)
    loaded.problems += problems


def open_state(config: Config, config_path: Path) -> Store:
    """The config's state store, opened. A SQLite file whose folder does not exist is refused
    (StoreError): a typo in ``state`` would otherwise start a new, empty store, and a replicator
    that forgets which groups it owns leaves them behind for good. A new file in a folder that
    exists is created, with a warning (the first run of a new installation)."""
    from replicator.logs import get_logger
    from state import Store, StoreError

    url = resolve_state_url(config.state, config_path)
    prefix = "sqlite:///"
    path = Path(url[len(prefix) :]) if url.startswith(prefix) and url != prefix + ":memory:" else None
    if path is not None and not path.parent.is_dir():
        raise StoreError(
            f"the state store's folder {path.parent} does not exist: create it, or correct `state:` in "
            f"{config_path} (a new, empty store would forget which groups the replicator owns)"
        )
    new = path is not None and not path.exists()
    store = Store(url)
    if new:
        get_logger("replicator.state").warning(
            "created a new, empty state store; if one should exist, check `state:`", path=str(path)
        )
    return store


def resolve_state_url(url: str, config_path: Path) -> str:
    """A relative SQLite path in the config is relative to the config file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        rel = url[len(prefix) :]
        return prefix + str((config_path.parent / rel).resolve())
    return url
