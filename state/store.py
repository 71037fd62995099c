"""What the replicator remembers: owned groups, runs, the audit trail, warnings, the lookup cache.

The database itself (engine, sessions, migrations, SQLite and PostgreSQL) is ``state/db.py``;
``Store`` adds each concern's records on top of it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from state.db import _MIGRATIONS as _MIGRATIONS
from state.db import StoreError as StoreError
from state.db import _sqlite_file_lock as _sqlite_file_lock
from state.db import _sqlite_pragmas as _sqlite_pragmas
from state.db import aware, maybe_aware, utcnow
from state.leases import LeaseStore
from state.lookups import LookupStore
from state.owned import OwnedGroupRecord as OwnedGroupRecord
from state.owned import OwnedGroupStore
from state.owned import _owned as _owned
from state.runs import AuditRecord as AuditRecord
from state.runs import RunRecord as RunRecord
from state.runs import RunStore
from state.runs import WarningRecord as WarningRecord
from state.runs import _run as _run
from state.runs import _warning as _warning
from state.tables import (
    ApiKeyRow,
    CounterRow,
    MeshObjectRow,
    ScimResourceRow,
    SourceSyncRow,
)
from state.tables import AuditRow as AuditRow
from state.tables import LeaseRow as LeaseRow
from state.tables import LookupRow as LookupRow
from state.tables import OwnedGroupRow as OwnedGroupRow
from state.tables import RunRow as RunRow
from state.tables import TenantRow as TenantRow
from state.tables import WarningRow as WarningRow
from state.tenants import TenantRecord as TenantRecord
from state.tenants import TenantStore

_MEMORY_LOCK = threading.Lock()


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
class ScimResource:
    """A resource of the SCIM service provider (see ``ScimResourceRow``)."""

    resource_type: str
    id: str
    document: Mapping[str, object]
    revision: int
    created_at: datetime
    updated_at: datetime


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


@dataclass(frozen=True)
class ApiKeyRecord:
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class SourceSyncRecord:
    source: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    users: int
    groups: int
    deprovisioned: int
    error: str | None
    last_complete_at: datetime | None

    def as_json(self) -> dict[str, object]:
        """As ``replicator status -o json`` and the daemon's ``/v1/status`` show it."""
        return {
            "source": self.source,
            "outcome": self.outcome,
            "startedAt": self.started_at.isoformat(),
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
            "lastCompleteAt": self.last_complete_at.isoformat() if self.last_complete_at else None,
            "users": self.users,
            "groups": self.groups,
            "deprovisioned": self.deprovisioned,
            "error": self.error,
        }


_now, _aware, _maybe = utcnow, aware, maybe_aware


class Store(OwnedGroupStore, TenantStore, RunStore, LeaseStore, LookupStore):
    """The state store behind one SQLAlchemy URL."""

    # --- stored meshObjects (object API, identity sources) ------------------------------------

    def objects_revision(self) -> int:
        """Grows with every change of the stored objects (a cheap "did anything change?")."""
        with self._tx() as s:
            row = s.get(CounterRow, "objects")
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
        lock; SQLite: a lock file beside the database."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy import text

            try:
                conn = self.engine.connect()
                conn.execute(text("SELECT pg_advisory_lock(7210553)"))
            except SQLAlchemyError as e:
                raise StoreError(f"state store {self.safe_url}: {e}") from e
            try:
                yield
            finally:
                with contextlib.suppress(SQLAlchemyError):
                    conn.execute(text("SELECT pg_advisory_unlock(7210553)"))
                conn.close()
            return
        database = self.engine.url.database
        if database in (None, "", ":memory:"):
            with _MEMORY_LOCK:
                yield
            return
        import fcntl

        with open(f"{database}.objects-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
        now = _now()
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
            counter = s.get(CounterRow, "objects")
            if counter is None:
                counter = CounterRow(name="objects", value=0)
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
            for i in range(0, len(names), 500):
                out += s.scalars(
                    select(MeshObjectRow).where(
                        MeshObjectRow.kind == kind, MeshObjectRow.key.in_(names[i : i + 500])
                    )
                )
        return out

    # --- API keys -----------------------------------------------------------------------------

    def create_api_key(self, name: str, secret_sha256: str, scopes: Iterable[str]) -> None:
        """Raises StoreError when a key of that name exists."""
        with self._tx() as s:
            if s.get(ApiKeyRow, name) is not None:
                raise StoreError(f"an API key named {name!r} exists: revoke it first")
            s.add(
                ApiKeyRow(
                    name=name, secret_sha256=secret_sha256, scopes=sorted(set(scopes)), created_at=_now()
                )
            )

    def api_key_by_hash(self, secret_sha256: str) -> ApiKeyRecord | None:
        with self._tx() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.secret_sha256 == secret_sha256)).first()
            if row is None:
                return None
            return ApiKeyRecord(row.name, tuple(row.scopes), _aware(row.created_at), _maybe(row.last_used_at))

    def touch_api_key(self, name: str) -> None:
        with self._tx() as s:
            s.execute(update(ApiKeyRow).where(ApiKeyRow.name == name).values(last_used_at=_now()))

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._tx() as s:
            return [
                ApiKeyRecord(r.name, tuple(r.scopes), _aware(r.created_at), _maybe(r.last_used_at))
                for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name))
            ]

    def revoke_api_key(self, name: str) -> bool:
        with self._tx() as s:
            row = s.get(ApiKeyRow, name)
            if row is None:
                return False
            s.delete(row)
            return True

    # --- identity source syncs ----------------------------------------------------------------

    def start_sync(self, source: str) -> None:
        with self._tx() as s:
            row = s.get(SourceSyncRow, source)
            if row is None:
                row = SourceSyncRow(source=source)
                s.add(row)
            row.started_at, row.finished_at, row.outcome, row.error = _now(), None, "running", None

    def finish_sync(
        self,
        source: str,
        outcome: str,
        *,
        users: int = 0,
        groups: int = 0,
        deprovisioned: int = 0,
        error: str | None = None,
    ) -> None:
        now = _now()
        with self._tx() as s:
            row = s.get(SourceSyncRow, source)
            if row is None:
                row = SourceSyncRow(source=source, started_at=now)
                s.add(row)
            row.finished_at, row.outcome, row.error = now, outcome, error
            row.users, row.groups, row.deprovisioned = users, groups, deprovisioned
            if outcome == "complete":
                row.last_complete_at = now

    def syncs(self) -> list[SourceSyncRecord]:
        with self._tx() as s:
            return [
                SourceSyncRecord(
                    r.source,
                    _aware(r.started_at),
                    _maybe(r.finished_at),
                    r.outcome,
                    r.users,
                    r.groups,
                    r.deprovisioned,
                    r.error,
                    _maybe(r.last_complete_at),
                )
                for r in s.scalars(select(SourceSyncRow).order_by(SourceSyncRow.source))
            ]

    # --- SCIM resources (the SCIM service provider, replicator/sources/scim.py) ---------------

    def scim_resources(self, resource_type: str) -> list[ScimResource]:
        with self._tx() as s:
            q = (
                select(ScimResourceRow)
                .where(ScimResourceRow.resource_type == resource_type)
                .order_by(ScimResourceRow.created_at, ScimResourceRow.id)
            )
            return [_scim(r) for r in s.scalars(q)]

    def scim_resource(self, resource_type: str, id: str) -> ScimResource | None:
        with self._tx() as s:
            row = s.get(ScimResourceRow, (resource_type, id))
            return _scim(row) if row is not None else None

    def put_scim_resources(
        self, puts: Sequence[tuple[str, str, Mapping[str, object]]], deletes: Iterable[tuple[str, str]] = ()
    ) -> dict[tuple[str, str], ScimResource]:
        """Create or replace (resource_type, id, document) and delete (resource_type, id), in one
        transaction; a changed document gets the next revision. Returns the written resources."""
        now = _now()
        out: dict[tuple[str, str], ScimResource] = {}
        with self._tx() as s:
            for resource_type, id, document in puts:
                row = s.get(ScimResourceRow, (resource_type, id))
                if row is None:
                    row = ScimResourceRow(
                        resource_type=resource_type,
                        id=id,
                        document=dict(document),
                        revision=1,
                        created_at=now,
                        updated_at=now,
                    )
                    s.add(row)
                elif row.document != dict(document):
                    row.document, row.revision, row.updated_at = dict(document), row.revision + 1, now
                s.flush()
                out[(resource_type, id)] = _scim(row)
            for resource_type, id in deletes:
                row = s.get(ScimResourceRow, (resource_type, id))
                if row is not None:
                    s.delete(row)
        return out


def _scim(r: ScimResourceRow) -> ScimResource:
    return ScimResource(
        r.resource_type, r.id, r.document, r.revision, _aware(r.created_at), _aware(r.updated_at)
    )


def _stored(r: MeshObjectRow) -> StoredObject:
    return StoredObject(
        kind=r.kind,
        key=r.key,
        source=r.source,
        document=r.document,
        external_id=r.external_id,
        deprovisioned_at=_maybe(r.deprovisioned_at),
        revision=r.revision,
        created_at=_maybe(r.created_at),
        updated_at=_maybe(r.updated_at),
    )
