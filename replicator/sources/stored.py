"""Changing the meshObjects kept in the state store, all or nothing: a change (objects to put,
delete or deprovision, by one source) is validated against the whole inventory it would produce
(files plus stored objects) before anything is written, with the same located errors as
``replicator validate``. The object API and every identity source write through here.

A long-running process (the daemon) keeps the inventory it read and validated last in a
:class:`LoadedCache`: a change is then checked against it instead of reading every stored object
again, as long as the store's objects revision says nobody wrote since (read under the objects
lock, which every writer holds). A change of users and groups (what SCIM, OIDC logins and LDAP
write) is then checked by what it touches (``replicator.inputs.revise``): with 100,000 stored
users, reading them took seconds and validating them all a fifth of a second, once per write.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from replicator.core.inventory import object_document, object_key
from replicator.inputs.loader import InputError, Loaded, LoadedObject, Problem, load
from replicator.inputs.revise import Checked, Edit, revise
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


MAX_EXTERNAL_ID = 1024
"""Characters of an object's external id (a source's own id of it: a SCIM externalId, an LDAP
DN); the store's column holds as many, on PostgreSQL and SQLite alike."""


def edit(loaded: Loaded, change: Change) -> Edit:
    """``change`` as the store applies it to ``loaded`` (pure): stored objects it replaces, deletes
    or deprovisions leave the inventory, its puts enter it, and the problems of the change itself.
    File objects are never replaced: a put or delete of one is a problem (files are read-only
    through the store)."""
    put_ids = change.ids()
    problems = []
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
    for (kind, name), external_id in sorted(change.external_ids.items()):
        if len(external_id) > MAX_EXTERNAL_ID:
            problems.append(
                Problem(
                    "request",
                    None,
                    f"{kind} {name}",
                    "externalId",
                    f"{len(external_id)} characters; at most {MAX_EXTERNAL_ID}",
                )
            )
    deprovisioned = (
        set(loaded.deprovisioned_users)
        - {k for kind, k in put_ids if kind == "meshUser"}
        - {k for kind, k in change.deletes if kind == "meshUser"}
    ) | {k for kind, k in change.deprovisions if kind == "meshUser"}
    # A put and a deprovision of one user (SCIM ``active: false``): the store writes the document
    # and marks it deprovisioned, so it is out of the inventory, as after a reload.
    puts = [(oid, lo) for lo, oid in zip(change.puts, put_ids, strict=True) if oid not in change.deprovisions]
    return Edit(
        puts=puts,
        out=change.deletes | change.deprovisions,
        deletes=frozenset(change.deletes),
        deprovisioned_users=frozenset(deprovisioned),
        problems=problems,
    )


def candidate(loaded: Loaded, change: Change) -> Loaded:
    """The inventory as it would be after ``change`` (pure; see :func:`edit`), to be validated
    whole."""
    e = edit(loaded, change)
    gone = {oid for oid, _ in e.puts} | set(e.out)
    kept = []
    for lo in loaded.objects:
        key = object_key(lo.obj)
        if key is not None and (lo.obj.kind, key) in gone and (lo.obj.kind, key) not in loaded.file_keys:
            continue
        kept.append(lo)
    return dataclasses.replace(
        loaded,
        objects=kept + [lo for _, lo in e.puts],
        problems=list(loaded.problems) + list(e.problems),
        deprovisioned_users=e.deprovisioned_users,
    )


class LoadedCache:
    """The inventory (files and stored objects) as last read or written by this process and what
    validating it gave, with the store's objects revision it matches; safe to share between
    threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked: Checked | None = None

    def get(self, revision: int) -> Checked | None:
        """The cached inventory if it is the store's at ``revision`` and the files it was read from
        are unchanged, else None."""
        with self._lock:
            checked = self._checked
        if (
            checked is None
            or checked.loaded.store_revision != revision
            or not checked.loaded.files_unchanged()
        ):
            return None
        return checked

    def latest(self) -> Checked | None:
        """What was cached last, current or not: a reload reads again only the files that changed
        since (see :func:`replicator.inputs.loader.load`)."""
        with self._lock:
            return self._checked

    def keep(self, checked: Checked) -> None:
        """Remember ``checked`` unless what is cached is newer (a reload that read the store before
        a write finished must not replace what that write left)."""
        if checked.loaded.store_revision is None or checked.loaded.problems:
            return
        with self._lock:
            known = self._checked.loaded.store_revision if self._checked is not None else None
            if known is None or checked.loaded.store_revision >= known:
                self._checked = checked

    def forget(self) -> None:
        with self._lock:
            self._checked = None


def current(config_path: Path, store: Store | None, cache: LoadedCache | None = None) -> Loaded:
    """The inventory with the stored objects as they are now: the cached one when it is current,
    else read (files and store; without a store, the config's)."""
    checked = cached(store, cache)
    return checked.loaded if checked is not None else load(config_path, store)


def cached(store: Store | None, cache: LoadedCache | None) -> Checked | None:
    """The cached inventory when it is the store's current one, else None."""
    return cache.get(store.objects_revision()) if cache is not None and store is not None else None


def check(config_path: Path, store: Store, change: Change, cache: LoadedCache | None = None) -> Validated:
    """Validate the inventory ``change`` would produce; raises InputError with every problem."""
    return _check(config_path, store, change, cache).validated


def _check(config_path: Path, store: Store, change: Change, cache: LoadedCache | None) -> Checked:
    """The inventory after ``change`` (unwritten), validated. When the cached inventory is the
    store's current one (the caller holds the objects lock) and the change is one of users and
    groups, only what it touches is checked (``revise``); else the whole inventory is."""
    base = cached(store, cache)
    loaded = base.loaded if base is not None else load(config_path, store)
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
    if base is not None:
        revised = revise(base, edit(loaded, change))
        if revised is not None:
            return revised
    after = candidate(loaded, change)
    return Checked(after, validate(after))


def apply(
    config_path: Path,
    store: Store,
    change: Change,
    *,
    take_over: bool = False,
    cache: LoadedCache | None = None,
) -> tuple[Validated, int]:
    """Validate, then write ``change`` in one transaction. Returns the validated inventory and the
    new objects revision. Raises InputError (nothing written) or ObjectOwnedError (nothing written).
    ``cache``: the process's last inventory, used when current and updated after the write."""
    with store.objects_lock():
        return apply_locked(config_path, store, change, take_over=take_over, cache=cache)


def apply_locked(
    config_path: Path,
    store: Store,
    change: Change,
    *,
    take_over: bool = False,
    cache: LoadedCache | None = None,
) -> tuple[Validated, int]:
    """``apply`` for a caller that already holds ``store.objects_lock()`` because its own checks
    must see the same state as the write (SCIM's userName uniqueness). The lock is not re-entrant."""
    after = _check(config_path, store, change, cache)
    before = after.loaded.store_revision
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
    # Nobody else wrote in between (the lock): the store now holds exactly ``after``.
    # Kept once committed: a caller's transaction around this write may still roll it back.
    if cache is not None and before is not None and revision > before:
        written = after.with_revision(revision)
        store.after_commit(lambda: cache.keep(written))
    return after.validated, revision


def as_loaded(objects: Iterable[object], where: str) -> list[LoadedObject]:
    """Typed meshObjects built in code (identity sources) as LoadedObjects named ``where``."""
    from replicator.inputs.loader import Source

    out = []
    for obj in objects:
        key = object_key(obj)
        out.append(LoadedObject(obj, Source(where, None), f"{getattr(obj, 'kind', 'object')} {key}"))
    return out
