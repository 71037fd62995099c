"""Quota shares: which replicas are working against which platform quota right now, so that the
replicas on one PostgreSQL split a platform's request rate (``schedule.rateLimits``) between them.

A replica registers itself for a quota owner with a short time to live and renews it while it
sends requests under that quota; the number of live registrations is how many replicas share the
rate. A replica that stops (or is killed) drops out when its registration expires, at the latest.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from state.db import Database, utcnow
from state.tables import QuotaShareRow

STALE = timedelta(hours=1)
"""Registrations expired longer ago than this are deleted (any replica does it when it renews)."""


class QuotaStore(Database):
    """The quota shares of ``Store``."""

    def share_quota(self, owner: str, replica: str, ttl: timedelta, now: datetime | None = None) -> int:
        """Register (or renew) ``replica`` as working against the quota of ``owner`` until
        ``now + ttl``; how many replicas, this one included, are registered for it and not expired."""
        now = now or utcnow()
        values = {"owner": owner, "replica": replica, "expires_at": now + ttl}
        with self._tx() as s:
            s.execute(self._upsert(QuotaShareRow, values, ("owner", "replica"), ("expires_at",)))
            stale = QuotaShareRow.expires_at < now - STALE
            s.execute(delete(QuotaShareRow).where(QuotaShareRow.owner == owner, stale))
            live = select(func.count()).where(QuotaShareRow.owner == owner, QuotaShareRow.expires_at > now)
            return int(s.scalar(live.select_from(QuotaShareRow)) or 0)

    def leave_quota(self, owner: str, replica: str) -> None:
        """``replica`` no longer works against the quota of ``owner`` (it went idle or stops)."""
        with self._tx() as s:
            s.execute(
                delete(QuotaShareRow).where(QuotaShareRow.owner == owner, QuotaShareRow.replica == replica)
            )

    def quota_shares(self, now: datetime | None = None) -> dict[str, int]:
        """Quota owner -> how many replicas are registered for it and not expired."""
        now = now or utcnow()
        with self._tx() as s:
            rows = s.execute(
                select(QuotaShareRow.owner, func.count())
                .where(QuotaShareRow.expires_at > now)
                .group_by(QuotaShareRow.owner)
            )
            return {owner: int(n) for owner, n in rows}
