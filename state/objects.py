"""Stored meshObjects, written by the object API and the identity sources (OIDC logins, LDAP, SCIM):
each has one owning source, a revision, and the store keeps a counter of their changes; the objects
lock serializes "validate the inventory a change produces, then write it" across writers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from state.db import Database, StoreError, chunks, file_lock, record_of, utcnow
from state.tables import CounterRow, MeshObjectRow

_MEMORY_LOCK = threading.Lock()
"""The objects lock of in-memory SQLite stores (one process: one lock for all of them)."""
_OBJECTS_LOCK_ID = 7210553
"""The PostgreSQL session advisory lock that is the objects lock there."""
_COUNTER = "objects"
"""The ``counters`` row that grows with every change of the stored objects."""


@dataclass(frozen=True)
class StoredObject:
    """A meshObject kept in the store (see ``MeshObjectRow``)."""

    kind: str
    key: str
    source: str
    document: Mapping[str, object]
    external_id: str | None = None
    deprovisioned_at: datetime | None = None
    revision: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ObjectWrite:
    """One object to create or replace (``document`` is the whole object, camelCase)."""

    kind: str
    key: str
    document: Mapping[str, object]
    external_id: str | None = None


class ObjectOwnedError(StoreError):
    """A write touched objects another source owns; nothing was written."""

    def __init__(self, owned: Mapping[tuple[str, str], str]) -> None:
        self.owned = dict(owned)
        listed = ", ".join(f"{k} {n} (owned by {s})" for (k, n), s in sorted(self.owned.items())[:10])
        super().__init__(f"owned by another source: {listed}")


class ObjectStore(Database):
    """The stored meshObjects of ``Store``."""

    def objects_revision(self) -> int:
        """Grows with every change of the stored objects (a cheap "did anything change?")."""
        with self._tx() as s:
            row = s.get(CounterRow, _COUNTER)
            return row.value if row is not None else 0

    def list_objects(
        self,
        kind: str | None = None,
        source: str | None = None,
        *,
        include_deprovisioned: bool = False,
    ) -> list[StoredObject]:
        with self._tx() as s:
            q = select(MeshObjectRow).order_by(MeshObjectRow.kind, MeshObjectRow.key)
            if kind is not None:
                q = q.where(MeshObjectRow.kind == kind)
            if source is not None:
                q = q.where(MeshObjectRow.source == source)
            if not include_deprovisioned:
                q = q.where(MeshObjectRow.deprovisioned_at.is_(None))
            return [_stored(r) for r in s.scalars(q)]

    @contextmanager
    def objects_lock(self) -> Iterator[None]:
        """Held around "validate the inventory a change produces, then write the change", so that
        two writers (replicas, threads, a CLI sync beside the daemon) cannot each add an object that
        is valid alone but not together (two users with one euid). PostgreSQL: a session advisory
        lock; SQLite: a lock file beside the database (an in-memory database: a process-wide lock)."""
        if self.engine.dialect.name == "postgresql":
            try:
                conn = self.engine.connect()
                conn.execute(text(f"SELECT pg_advisory_lock({_OBJECTS_LOCK_ID})"))
            except SQLAlchemyError as e:
                raise self._failed(e) from e
            try:
                yield
            finally:
                with contextlib.suppress(SQLAlchemyError):
                    conn.execute(text(f"SELECT pg_advisory_unlock({_OBJECTS_LOCK_ID})"))
                conn.close()
            return
        database = self.engine.url.database
        if database in (None, "", ":memory:"):
            with _MEMORY_LOCK:
                yield
            return
        with file_lock(f"{database}.objects-lock"):
            yield

    def get_object(self, kind: str, key: str) -> StoredObject | None:
        with self._tx() as s:
            row = s.get(MeshObjectRow, (kind, key))
            return _stored(row) if row is not None else None

    def write_objects(
        self,
        source: str,
        puts: Sequence[ObjectWrite] = (),
        deletes: Iterable[tuple[str, str]] = (),
        deprovisions: Iterable[tuple[str, str]] = (),
        *,
        take_over: bool = False,
    ) -> int:
        """Create or replace ``puts``, delete ``deletes`` and mark ``deprovisions`` (users their
        source no longer has) in one transaction, all or nothing. An object another source owns
        raises ObjectOwnedError unless ``take_over``. A put of a deprovisioned object revives it.
        Returns the new objects revision (unchanged when nothing changed)."""
        now = utcnow()
        deletes, deprovisions = list(deletes), list(deprovisions)
        with self._tx() as s:
            keys = [(w.kind, w.key) for w in puts] + deletes + deprovisions
            rows = {(r.kind, r.key): r for r in self._object_rows(s, keys)}
            owned = {k: r.source for k, r in rows.items() if r.source != source}
            if owned and not take_over:
                raise ObjectOwnedError(owned)
            changed = False
            for w in puts:
                row = rows.get((w.kind, w.key))
                document = dict(w.document)
                if row is None:
                    row = MeshObjectRow(
                        kind=w.kind,
                        key=w.key,
                        source=source,
                        external_id=w.external_id,
                        document=document,
                        deprovisioned_at=None,
                        revision=1,
                        created_at=now,
                        updated_at=now,
                    )
                    s.add(row)
                    rows[(w.kind, w.key)] = row
                    changed = True
                elif (
                    row.document != document
                    or row.deprovisioned_at is not None
                    or row.source != source
                    or row.external_id != w.external_id
                ):
                    row.document, row.deprovisioned_at, row.source = document, None, source
                    row.external_id = w.external_id
                    row.revision, row.updated_at = row.revision + 1, now
                    changed = True
            for key in deprovisions:
                row = rows.get(key)
                if row is not None and row.deprovisioned_at is None:
                    row.deprovisioned_at, row.revision, row.updated_at = now, row.revision + 1, now
                    changed = True
            for key in deletes:
                row = rows.get(key)
                if row is not None:
                    s.delete(row)
                    changed = True
            counter = s.get(CounterRow, _COUNTER)
            if counter is None:
                counter = CounterRow(name=_COUNTER, value=0)
                s.add(counter)
            if changed:
                counter.value += 1
            return counter.value

    @staticmethod
    def _object_rows(s: Session, keys: Sequence[tuple[str, str]]) -> list[MeshObjectRow]:
        out: list[MeshObjectRow] = []
        by_kind: dict[str, list[str]] = {}
        for kind, key in keys:
            by_kind.setdefault(kind, []).append(key)
        for kind, names in by_kind.items():
            for chunk in chunks(names):
                out += s.scalars(
                    select(MeshObjectRow).where(MeshObjectRow.kind == kind, MeshObjectRow.key.in_(chunk))
                )
        return out


def _stored(r: MeshObjectRow) -> StoredObject:
    return record_of(StoredObject, r)
