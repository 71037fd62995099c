"""Run history: one record per reconcile (or plan) of a tenant, the audit trail of the changes it
applied or attempted, and the tenant's replication warnings (open until their cause is gone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from state.db import Database, StoreError, record_of, utcnow
from state.tables import AuditRow, RunRow, WarningRow


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


class RunStore(Database):
    """The runs, the audit trail and the warnings of ``Store``."""

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, tenant: str, platform: str, dry_run: bool, now: datetime | None = None) -> int:
        """Open a run; runs of this tenant left 'running' by a crashed process become 'interrupted'."""
        now = now or utcnow()
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
            row.error, row.finished_at = error, now or utcnow()

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
        record = AuditRecord(run_id, utcnow(), tenant, platform, action, group_name, subject, outcome, error)
        with self._tx() as s:
            s.add(AuditRow(**dataclasses.asdict(record)))

    def audit_trail(self, tenant: str | None = None) -> list[AuditRecord]:
        q = select(AuditRow).order_by(AuditRow.id)
        if tenant is not None:
            q = q.where(AuditRow.tenant == tenant)
        with self._tx() as s:
            return [_audit(r) for r in s.scalars(q)]

    # --- warnings -----------------------------------------------------------------------------

    def sync_warnings(
        self, tenant: str, platform: str, current: Sequence[tuple[str, str, str]], now: datetime | None = None
    ) -> None:
        """Make the open warnings of a tenant exactly ``current`` (code, subject, message): new ones
        open, seen ones get ``last_seen``, gone ones are cleared."""
        now = now or utcnow()
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
                opened = WarningRecord(tenant, platform, code, subject, msg, now, now, None)
                s.add(WarningRow(**dataclasses.asdict(opened)))

    def open_warnings(self, tenant: str | None = None) -> list[WarningRecord]:
        q = (
            select(WarningRow)
            .where(WarningRow.cleared_at.is_(None))
            .order_by(WarningRow.tenant, WarningRow.code, WarningRow.subject)
        )
        if tenant is not None:
            q = q.where(WarningRow.tenant == tenant)
        with self._tx() as s:
            return [_warning(r) for r in s.scalars(q)]

    def warning_history(self, tenant: str) -> list[WarningRecord]:
        with self._tx() as s:
            q = select(WarningRow).where(WarningRow.tenant == tenant).order_by(WarningRow.id)
            return [_warning(r) for r in s.scalars(q)]


def _run(r: RunRow) -> RunRecord:
    return record_of(RunRecord, r)


def _audit(r: AuditRow) -> AuditRecord:
    return record_of(AuditRecord, r)


def _warning(r: WarningRow) -> WarningRecord:
    return record_of(WarningRecord, r)
