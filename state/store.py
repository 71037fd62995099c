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
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from state.db import _MIGRATIONS as _MIGRATIONS
from state.db import Database, aware, maybe_aware, utcnow
from state.db import StoreError as StoreError
from state.db import _sqlite_file_lock as _sqlite_file_lock
from state.db import _sqlite_pragmas as _sqlite_pragmas
from state.tables import (
    ApiKeyRow,
    AuditRow,
    CounterRow,
    LeaseRow,
    LookupRow,
    MeshObjectRow,
    OwnedGroupRow,
    RunRow,
    ScimResourceRow,
    SourceSyncRow,
    TenantRow,
    WarningRow,
)

_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class OwnedGroupRecord:
    platform: str
    tenant: str
    alias: str
    name: str
    platform_id: str | None
    roles: frozenset[str]
    state: str
    members: frozenset[str] = frozenset()
    """Platform user ids this replicator added to the group (and has not removed since)."""


@dataclass(frozen=True, order=True)
class TenantRecord:
    key: str
    platform: str
    local_id: str
    status: str
    """Active, Revoking, DeletingGroups, Deleted (or Unknown: owned groups without a record)."""


@dataclass(frozen=True)
class RunRecord:
    id: int
    tenant: str
    platform: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    changes_applied: int
    changes_pending: int
    error: str | None


@dataclass(frozen=True)
class WarningRecord:
    tenant: str
    platform: str
    code: str
    subject: str
    message: str
    first_seen: datetime
    last_seen: datetime
    cleared_at: datetime | None


@dataclass(frozen=True)
class AuditRecord:
    run_id: int | None
    at: datetime
    tenant: str
    platform: str
    action: str
    group_name: str
    subject: str
    outcome: str
    error: str | None


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


class Store(Database):
    """The state store behind one SQLAlchemy URL."""

    # --- owned groups -------------------------------------------------------------------------

    def owned_groups(self, platform: str, tenant: str) -> list[OwnedGroupRecord]:
        with self._tx() as s:
            rows = s.scalars(
                select(OwnedGroupRow)
                .where(OwnedGroupRow.platform == platform, OwnedGroupRow.tenant == tenant)
                .order_by(OwnedGroupRow.name)
            )
            return [_owned(r) for r in rows]

    def record_group_intent(self, platform: str, tenant: str, alias: str, name: str) -> None:
        """Written before the create call: a crash after it leaves a pending record the next run
        completes (the driver adopts the group by name if it carries our marker)."""
        now = _now()
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is None:
                s.add(
                    OwnedGroupRow(
                        platform=platform,
                        tenant=tenant,
                        alias=alias,
                        name=name,
                        platform_id=None,
                        roles=[],
                        state="pending",
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                row.alias, row.updated_at = alias, now

    def confirm_group(self, platform: str, tenant: str, name: str, platform_id: str, alias: str) -> None:
        now = _now()
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is None:
                row = OwnedGroupRow(
                    platform=platform, tenant=tenant, alias=alias, name=name, roles=[], created_at=now
                )
                s.add(row)
            row.platform_id, row.state, row.updated_at, row.alias = platform_id, "active", now, alias

    def set_group_roles(self, platform: str, tenant: str, name: str, roles: Iterable[str]) -> None:
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is not None:
                row.roles = sorted(set(roles))
                row.updated_at = _now()

    def add_group_role(self, platform: str, tenant: str, name: str, role: str) -> None:
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is not None and role not in row.roles:
                row.roles = sorted({*row.roles, role})
                row.updated_at = _now()

    def remove_group_role(self, platform: str, tenant: str, name: str, role: str) -> None:
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is not None and role in row.roles:
                row.roles = sorted(set(row.roles) - {role})
                row.updated_at = _now()

    def add_group_member(self, platform: str, tenant: str, name: str, user_id: str) -> None:
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is not None and user_id not in (row.members or []):
                row.members = sorted({*(row.members or []), user_id})
                row.updated_at = _now()

    def remove_group_member(self, platform: str, tenant: str, name: str, user_id: str) -> None:
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is not None and user_id in (row.members or []):
                row.members = sorted(set(row.members) - {user_id})
                row.updated_at = _now()

    def forget_group(self, platform: str, tenant: str, name: str) -> None:
        with self._tx() as s:
            s.execute(
                delete(OwnedGroupRow).where(
                    OwnedGroupRow.platform == platform,
                    OwnedGroupRow.tenant == tenant,
                    OwnedGroupRow.name == name,
                )
            )

    @staticmethod
    def _group_row(s: Session, platform: str, tenant: str, name: str) -> OwnedGroupRow | None:
        return s.scalar(
            select(OwnedGroupRow).where(
                OwnedGroupRow.platform == platform, OwnedGroupRow.tenant == tenant, OwnedGroupRow.name == name
            )
        )

    # --- tenants ------------------------------------------------------------------------------

    def set_tenant_status(self, tenant: str, platform: str, local_id: str, status: str) -> None:
        with self._tx() as s:
            row = s.get(TenantRow, tenant)
            if row is None:
                s.add(
                    TenantRow(
                        key=tenant, platform=platform, local_id=local_id, status=status, updated_at=_now()
                    )
                )
            elif row.status != status or row.local_id != local_id:
                row.status, row.local_id, row.updated_at = status, local_id, _now()

    def ensure_tenant(self, tenant: str, platform: str, local_id: str) -> None:
        """Record a tenant (status Active) before its first change, so that a tenant whose first run
        crashed is still known when it has to be deleted; an existing record is left as it is."""
        with self._tx() as s:
            if s.get(TenantRow, tenant) is None:
                s.add(
                    TenantRow(
                        key=tenant, platform=platform, local_id=local_id, status="Active", updated_at=_now()
                    )
                )

    def known_tenants(self) -> list[TenantRecord]:
        """Every tenant with a record or with owned groups (a group without a tenant record has an
        empty ``local_id`` and status ``Unknown``)."""
        with self._tx() as s:
            rows = {
                r.key: TenantRecord(r.key, r.platform, r.local_id, r.status)
                for r in s.scalars(select(TenantRow))
            }
            pairs = s.execute(select(OwnedGroupRow.platform, OwnedGroupRow.tenant).distinct())
            for platform, tenant in pairs:
                rows.setdefault(tenant, TenantRecord(tenant, platform, "", "Unknown"))
        return sorted(rows.values())

    def tenant_statuses(self) -> dict[str, str]:
        with self._tx() as s:
            return {r.key: r.status for r in s.scalars(select(TenantRow))}

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, tenant: str, platform: str, dry_run: bool, now: datetime | None = None) -> int:
        """Open a run; runs of this tenant left 'running' by a crashed process become 'interrupted'."""
        now = now or _now()
        with self._tx() as s:
            s.execute(
                update(RunRow)
                .where(RunRow.tenant == tenant, RunRow.outcome == "running")
                .values(
                    outcome="interrupted", finished_at=now, error="the process stopped before the run ended"
                )
            )
            row = RunRow(tenant=tenant, platform=platform, dry_run=dry_run, started_at=now, outcome="running")
            s.add(row)
            s.flush()
            return row.id

    def finish_run(
        self,
        run_id: int,
        outcome: str,
        changes_applied: int = 0,
        changes_pending: int = 0,
        error: str | None = None,
        now: datetime | None = None,
    ) -> None:
        with self._tx() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise StoreError(f"run {run_id} does not exist")
            row.outcome, row.changes_applied, row.changes_pending = outcome, changes_applied, changes_pending
            row.error, row.finished_at = error, now or _now()

    def last_runs(self, tenant: str | None = None, include_dry_runs: bool = False) -> list[RunRecord]:
        """The newest run of each tenant (or of one tenant)."""
        with self._tx() as s:
            q = select(RunRow).order_by(RunRow.tenant, RunRow.started_at.desc(), RunRow.id.desc())
            if tenant is not None:
                q = q.where(RunRow.tenant == tenant)
            if not include_dry_runs:
                q = q.where(RunRow.dry_run.is_(False))
            newest: dict[str, RunRecord] = {}
            for r in s.scalars(q):
                newest.setdefault(r.tenant, _run(r))
            return list(newest.values())

    def runs(self, tenant: str) -> list[RunRecord]:
        with self._tx() as s:
            return [
                _run(r) for r in s.scalars(select(RunRow).where(RunRow.tenant == tenant).order_by(RunRow.id))
            ]

    # --- audit --------------------------------------------------------------------------------

    def audit(
        self,
        run_id: int | None,
        tenant: str,
        platform: str,
        action: str,
        group_name: str,
        subject: str,
        outcome: str,
        error: str | None = None,
    ) -> None:
        with self._tx() as s:
            s.add(
                AuditRow(
                    run_id=run_id,
                    at=_now(),
                    tenant=tenant,
                    platform=platform,
                    action=action,
                    group_name=group_name,
                    subject=subject,
                    outcome=outcome,
                    error=error,
                )
            )

    def audit_trail(self, tenant: str | None = None) -> list[AuditRecord]:
        with self._tx() as s:
            q = select(AuditRow).order_by(AuditRow.id)
            if tenant is not None:
                q = q.where(AuditRow.tenant == tenant)
            return [
                AuditRecord(
                    r.run_id,
                    _aware(r.at),
                    r.tenant,
                    r.platform,
                    r.action,
                    r.group_name,
                    r.subject,
                    r.outcome,
                    r.error,
                )
                for r in s.scalars(q)
            ]

    # --- warnings -----------------------------------------------------------------------------

    def sync_warnings(
        self, tenant: str, platform: str, current: Sequence[tuple[str, str, str]], now: datetime | None = None
    ) -> None:
        """Make the open warnings of a tenant exactly ``current`` (code, subject, message): new ones
        open, seen ones get ``last_seen``, gone ones are cleared."""
        now = now or _now()
        wanted = {(c, subj): msg for c, subj, msg in current}
        with self._tx() as s:
            open_rows = s.scalars(
                select(WarningRow).where(WarningRow.tenant == tenant, WarningRow.cleared_at.is_(None))
            ).all()
            for row in open_rows:
                key = (row.code, row.subject)
                if key in wanted:
                    row.last_seen, row.message = now, wanted.pop(key)
                else:
                    row.cleared_at = now
            for (code, subject), msg in wanted.items():
                s.add(
                    WarningRow(
                        tenant=tenant,
                        platform=platform,
                        code=code,
                        subject=subject,
                        message=msg,
                        first_seen=now,
                        last_seen=now,
                    )
                )

    def open_warnings(self, tenant: str | None = None) -> list[WarningRecord]:
        with self._tx() as s:
            q = (
                select(WarningRow)
                .where(WarningRow.cleared_at.is_(None))
                .order_by(WarningRow.tenant, WarningRow.code, WarningRow.subject)
            )
            if tenant is not None:
                q = q.where(WarningRow.tenant == tenant)
            return [_warning(r) for r in s.scalars(q)]

    def warning_history(self, tenant: str) -> list[WarningRecord]:
        with self._tx() as s:
            q = select(WarningRow).where(WarningRow.tenant == tenant).order_by(WarningRow.id)
            return [_warning(r) for r in s.scalars(q)]

    # --- leases (several replicas) -------------------------------------------------------------

    def acquire_lease(
        self, tenant: str, holder: str, ttl: timedelta, now: datetime | None = None
    ) -> int | None:
        """Take or renew the tenant's lease for ``holder``: its fencing token (>= 1; a new holder
        gets a larger one than any before), or None while another holder's lease is live. The row
        is locked (``FOR UPDATE`` on PostgreSQL) so two replicas cannot both win."""
        from sqlalchemy.exc import IntegrityError

        now = now or _now()
        try:
            with self._sessions.begin() as s:
                # SKIP LOCKED: a row another replica is taking right now reads as absent; the insert
                # below then fails on the primary key and this replica backs off.
                query = select(LeaseRow).where(LeaseRow.tenant == tenant).with_for_update(skip_locked=True)
                row = s.scalar(query)
                if row is None:
                    row = LeaseRow(tenant=tenant, holder=holder, expires_at=now + ttl, token=1)
                    s.add(row)
                elif row.holder == holder and _aware(row.expires_at) > now:
                    row.expires_at = now + ttl
                elif _aware(row.expires_at) <= now:
                    row.holder, row.expires_at, row.token = holder, now + ttl, row.token + 1
                else:
                    return None
                token = row.token
            return token
        except IntegrityError:  # another replica inserted the row first
            return None
        except SQLAlchemyError as e:
            raise StoreError(f"state store {self.safe_url}: {e}") from e

    def renew_lease(
        self, tenant: str, holder: str, token: int, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        """Extend the lease while ``holder`` still holds it with ``token`` and it has not expired:
        the fencing check before every applied change. False: the lease is lost, stop at once."""
        now = now or _now()
        with self._tx() as s:
            result = s.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.tenant == tenant,
                    LeaseRow.holder == holder,
                    LeaseRow.token == token,
                    LeaseRow.expires_at > now,
                )
                .values(expires_at=now + ttl)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    def release_lease(self, tenant: str, holder: str) -> None:
        """Give the lease up (it expires now). The row stays, so the next holder's token is still
        larger than every token before it."""
        with self._tx() as s:
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.tenant == tenant, LeaseRow.holder == holder)
                .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
            )

    def lease_holder(self, tenant: str, now: datetime | None = None) -> str | None:
        now = now or _now()
        with self._tx() as s:
            row = s.get(LeaseRow, tenant)
            return row.holder if row is not None and _aware(row.expires_at) > now else None

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

    # --- lookup cache -------------------------------------------------------------------------

    def cached_lookups(
        self, platform: str, euids: Iterable[str], ttl: timedelta, now: datetime | None = None
    ) -> dict[str, list[tuple[str, str]]]:
        """Fresh cached lookups: transformed euid -> [(platform user id, name), ...]."""
        now = now or _now()
        wanted = list(dict.fromkeys(euids))
        found: dict[str, list[tuple[str, str]]] = {}
        with self._tx() as s:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                for r in s.scalars(
                    select(LookupRow).where(LookupRow.platform == platform, LookupRow.euid.in_(chunk))
                ):
                    if now - _aware(r.fetched_at) < ttl:
                        found[r.euid] = [(u[0], u[1]) for u in r.users]
        return found

    def store_lookups(
        self, platform: str, results: Mapping[str, Sequence[tuple[str, str]]], now: datetime | None = None
    ) -> None:
        """Remember found users; a not-found euid drops its cached entry."""
        now = now or _now()
        with self._tx() as s:
            for euid, users in results.items():
                row = s.get(LookupRow, (platform, euid))
                if not users:
                    if row is not None:
                        s.delete(row)
                    continue
                if row is None:
                    s.add(
                        LookupRow(
                            platform=platform, euid=euid, users=[list(u) for u in users], fetched_at=now
                        )
                    )
                else:
                    row.users, row.fetched_at = [list(u) for u in users], now

    def forget_lookups(self, platform: str, euids: Iterable[str]) -> None:
        with self._tx() as s:
            s.execute(
                delete(LookupRow).where(LookupRow.platform == platform, LookupRow.euid.in_(list(euids)))
            )

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


def _owned(r: OwnedGroupRow) -> OwnedGroupRecord:
    return OwnedGroupRecord(
        r.platform,
        r.tenant,
        r.alias,
        r.name,
        r.platform_id,
        frozenset(r.roles or ()),
        r.state,
        frozenset(r.members or ()),
    )


def _run(r: RunRow) -> RunRecord:
    return RunRecord(
        r.id,
        r.tenant,
        r.platform,
        r.dry_run,
        _aware(r.started_at),
        _aware(r.finished_at) if r.finished_at else None,
        r.outcome,
        r.changes_applied,
        r.changes_pending,
        r.error,
    )


def _warning(r: WarningRow) -> WarningRecord:
    return WarningRecord(
        r.tenant,
        r.platform,
        r.code,
        r.subject,
        r.message,
        _aware(r.first_seen),
        _aware(r.last_seen),
        _aware(r.cleared_at) if r.cleared_at else None,
    )
