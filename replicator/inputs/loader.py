"""Reading the config file and the inventory (files or folders of multi-document YAML), keeping
where every object came from so each problem can be reported with file, line, object and field."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from replicator.core.config import Config
from replicator.inputs.documents import FileNodes as FileNodes
from replicator.inputs.documents import FileRead as FileRead
from replicator.inputs.documents import LoadedObject as LoadedObject
from replicator.inputs.documents import Source as Source
from replicator.inputs.documents import _validation_problems as _validation_problems
from replicator.inputs.documents import flatten, read_files
from replicator.inputs.documents import load_objects as load_objects
from replicator.inputs.documents import objects_from_documents as objects_from_documents
from replicator.inputs.environment import overriding, with_overrides
from replicator.inputs.yamlread import MAX_DEPTH as MAX_DEPTH
from replicator.inputs.yamlread import InputError as InputError
from replicator.inputs.yamlread import Problem as Problem
from replicator.inputs.yamlread import field_path as field_path
from replicator.inputs.yamlread import locate as locate
from replicator.inputs.yamlread import parse_yaml_bytes as parse_yaml_bytes
from replicator.inputs.yamlread import read_yaml_documents as read_yaml_documents
from replicator.memory import bulk

if TYPE_CHECKING:
    from state import Store

_YAML_SUFFIXES = (".yaml", ".yml")


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
    files: dict[str, FileRead] = field(default_factory=dict)
    """What each inventory file gave, by path (see :func:`load_objects`)."""

    def files_unchanged(self) -> bool:
        """Whether the config and inventory files are still those this was read from (same files,
        same modification times)."""
        return (
            self.file_stamps is not None and input_stamps(self.config_path, self.config) == self.file_stamps
        )


def changed_objects(before: Loaded, after: Loaded) -> list[Any] | None:
    """The objects, in either load, of the inventory files whose bytes differ between the two
    (both versions of each, and those of a file added or removed): all that may differ when the
    stored objects are the same. None when they may not be (another store revision)."""
    stored = (before.store_revision, before.deprovisioned_users)
    if stored != (after.store_revision, after.deprovisioned_users):
        return None
    out: list[Any] = []
    for path in before.files.keys() | after.files.keys():
        a, b = before.files.get(path), after.files.get(path)
        if a is not b:
            out += [lo.obj for r in (a, b) if r is not None for lo in r.objects]
    return out


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


def load(
    config_path: Path | None = None, store: Store | None = None, previous: Loaded | None = None
) -> Loaded:
    """Read config and inventory (with ``storedObjects``, the objects kept in ``store``, or in the
    config's state store when none is given). Raises InputError with every problem found while
    reading; the cross-reference checks live in :mod:`replicator.inputs.validate`. ``previous``: an
    earlier load of the same config, whose files are not parsed again while their bytes are the
    same (the daemon's reload)."""
    with bulk():
        return _load(config_path or default_config_path(), store, previous)


def _load(path: Path, store: Store | None, previous: Loaded | None) -> Loaded:
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
    read = read_files(files, previous.files if previous is not None else None)
    objects, problems = flatten(read)
    loaded = Loaded(path, config, source, objects, file_problems + problems, file_stamps=stamps, files=read)
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
