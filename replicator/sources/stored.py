"""Changing the meshObjects kept in the state store, all or nothing: a change (objects to put,
delete or deprovision, by one source) is validated against the whole inventory it would produce
(files plus stored objects) before anything is written, with the same located errors as
``replicator validate``. The object API and every identity source write through here."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from replicator.core.inventory import object_document, object_key
from replicator.inputs.loader import InputError, Loaded, LoadedObject, Problem, load
from replicator.inputs.validate import Validated, validate
from state import ObjectWrite, Store

ObjectId = tuple[str, str]
"""(kind, object key)."""


@dataclass
class Change:
    """What one source wants to change. ``puts`` are typed meshObjects (their Source says where
    they came from, for messages); deletes and deprovisions are (kind, key)."""

    source: str
    puts: list[LoadedObject] = field(default_factory=list)
    deletes: set[ObjectId] = field(default_factory=set)
    deprovisions: set[ObjectId] = field(default_factory=set)
    """Users the source no longer has: kept in the store, out of the inventory."""
    external_ids: dict[ObjectId, str] = field(default_factory=dict)

    def ids(self) -> list[ObjectId]:
        out = []
        for lo in self.puts:
            key = object_key(lo.obj)
            if key is None:
                raise ValueError(f"{lo.label}: a stored {lo.obj.kind} needs metadata.name")
            out.append((lo.obj.kind, key))
        return out


def candidate(loaded: Loaded, change: Change) -> Loaded:
    """The inventory as it would be after ``change`` (pure): stored objects it replaces, deletes or
    deprovisions are taken out, its puts added. File objects are never replaced: a put or delete
    of one is a problem (files are read-only through the store)."""
    put_ids = change.ids()
    problems = list(loaded.problems)
    for lo, oid in zip(change.puts, put_ids, strict=True):
        if oid in loaded.file_keys:
            problems.append(
                Problem(
                    lo.source.file,
                    lo.source.line(),
                    lo.label,
                    None,
                    "defined in an inventory file: change it there (files are read-only here)",
                )
            )
    for oid in sorted(change.deletes | change.deprovisions):
        if oid in loaded.file_keys:
            problems.append(
                Problem(
                    "request",
                    None,
                    f"{oid[0]} {oid[1]}",
                    None,
                    "defined in an inventory file: change it there (files are read-only here)",
                )
            )
    gone = set(put_ids) | change.deletes | change.deprovisions
    kept = []
    for lo in loaded.objects:
        key = object_key(lo.obj)
        if key is not None and (lo.obj.kind, key) in gone and (lo.obj.kind, key) not in loaded.file_keys:
            continue
        kept.append(lo)
    deprovisioned = (
        set(loaded.deprovisioned_users)
        - {k for kind, k in put_ids if kind == "meshUser"}
        - {k for kind, k in change.deletes if kind == "meshUser"}
    ) | {k for kind, k in change.deprovisions if kind == "meshUser"}
    return dataclasses.replace(
        loaded,
        objects=kept + list(change.puts),
        problems=problems,
        deprovisioned_users=frozenset(deprovisioned),
    )


def check(config_path: Path, store: Store, change: Change) -> Validated:
    """Validate the inventory ``change`` would produce; raises InputError with every problem."""
    loaded = load(config_path, store)
    if not loaded.config.stored_objects:
        raise InputError(
            [
                Problem(
                    str(config_path),
                    loaded.config_source.line(["storedObjects"]),
                    None,
                    "storedObjects",
                    "stored meshObjects are not read: set storedObjects: true",
                )
            ]
        )
    return validate(candidate(loaded, change))


def apply(
    config_path: Path, store: Store, change: Change, *, take_over: bool = False
) -> tuple[Validated, int]:
    """Validate, then write ``change`` in one transaction. Returns the validated inventory and the
    new objects revision. Raises InputError (nothing written) or ObjectOwnedError (nothing written)."""
    with store.objects_lock():
        return apply_locked(config_path, store, change, take_over=take_over)


def apply_locked(
    config_path: Path, store: Store, change: Change, *, take_over: bool = False
) -> tuple[Validated, int]:
    """``apply`` for a caller that already holds ``store.objects_lock()`` because its own checks
    must see the same state as the write (SCIM's userName uniqueness). The lock is not re-entrant."""
    validated = check(config_path, store, change)
    revision = store.write_objects(
        change.source,
        puts=[
            ObjectWrite(kind, key, object_document(lo.obj), change.external_ids.get((kind, key)))
            for lo, (kind, key) in zip(change.puts, change.ids(), strict=True)
        ],
        deletes=sorted(change.deletes),
        deprovisions=sorted(change.deprovisions),
        take_over=take_over,
    )
    return validated, revision


def as_loaded(objects: Iterable[object], where: str) -> list[LoadedObject]:
    """Typed meshObjects built in code (identity sources) as LoadedObjects named ``where``."""
    from replicator.inputs.loader import Source

    out = []
    for obj in objects:
        key = object_key(obj)
        out.append(LoadedObject(obj, Source(where, None), f"{getattr(obj, 'kind', 'object')} {key}"))
    return out
