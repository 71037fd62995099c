"""Identity-source records: the last sync of each source (LDAP connector), when it ran, how it
ended, what it read, and when it last completed; and the SAML assertions seen (replays)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from state.db import Database, record_of, utcnow
from state.tables import SeenAssertionRow, SourceSyncRow


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


class SyncStore(Database):
    """The identity-source sync records of ``Store``."""

    def start_sync(self, source: str) -> None:
        now = utcnow()
        with self._tx() as s:
            row = self._sync_row(s, source, now)
            row.started_at, row.finished_at, row.outcome, row.error = now, None, "running", None

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
        now = utcnow()
        with self._tx() as s:
            row = self._sync_row(s, source, now)
            row.finished_at, row.outcome, row.error = now, outcome, error
            row.users, row.groups, row.deprovisioned = users, groups, deprovisioned
            if outcome == "complete":
                row.last_complete_at = now

    def syncs(self) -> list[SourceSyncRecord]:
        with self._tx() as s:
            return [_sync(r) for r in s.scalars(select(SourceSyncRow).order_by(SourceSyncRow.source))]

    @staticmethod
    def _sync_row(s: Session, source: str, now: datetime) -> SourceSyncRow:
        """The source's record; a new one (added to the session) started ``now``."""
        row = s.get(SourceSyncRow, source)
        if row is None:
            row = SourceSyncRow(source=source, started_at=now)
            s.add(row)
        return row


def _sync(r: SourceSyncRow) -> SourceSyncRecord:
    return record_of(SourceSyncRecord, r)


class AssertionStore(Database):
    """SAML assertions seen, for replay protection (part of ``Store``)."""

    def remember_assertion(self, key: str, keep_until: datetime) -> bool:
        """Record ``key`` until ``keep_until``; False when it is recorded already (a replay, on this
        replica or another). Expired records are dropped on the way."""
        from sqlalchemy import delete
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(SeenAssertionRow).values(key=key, expires_at=keep_until)
        with self._tx() as s:
            s.execute(delete(SeenAssertionRow).where(SeenAssertionRow.expires_at < utcnow()))
            done: Any = s.execute(insert.on_conflict_do_nothing(index_elements=[SeenAssertionRow.key]))
            return bool(done.rowcount)  # 0: the key was there (a CursorResult; typed as a Result)
