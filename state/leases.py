"""Tenant leases: which run works on a tenant, until when, with a fencing token that grows with
each acquisition, so that several replicas (and one-shot runs) on one store split the work and a
run that lost its lease can be told from the one that holds it now.

A lease belongs to one run, not to a replica: while it is live nobody acquires it again, the
holder's own next run included; the holder extends it with :meth:`renew_lease` and its token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from state.db import Database, aware, utcnow
from state.tables import LeaseRow


class LeaseStore(Database):
    """The tenant leases of ``Store``."""

    def acquire_lease(
        self, tenant: str, holder: str, ttl: timedelta, now: datetime | None = None
    ) -> int | None:
        """Take the tenant's lease for one run of ``holder``: its fencing token (>= 1, larger than
        any token before), or None while a lease on it is live, whoever holds it (the same holder's
        other run too). The row is locked (``FOR UPDATE`` on PostgreSQL) so two replicas cannot
        both win."""
        now = now or utcnow()
        try:
            # Not self._tx(): a lost race on the insert below must come here as IntegrityError.
            with self._begin() as s:
                # SKIP LOCKED: a row another replica is taking right now reads as absent; the insert
                # below then fails on the primary key and this replica backs off.
                query = select(LeaseRow).where(LeaseRow.tenant == tenant).with_for_update(skip_locked=True)
                row = s.scalar(query)
                if row is None:
                    row = LeaseRow(tenant=tenant, holder=holder, expires_at=now + ttl, token=1)
                    s.add(row)
                elif aware(row.expires_at) <= now:
                    row.holder, row.expires_at, row.token = holder, now + ttl, row.token + 1
                else:
                    return None
                token = row.token
            return token
        except IntegrityError:  # another replica inserted the row first
            return None
        except SQLAlchemyError as e:
            raise self._failed(e) from e

    def renew_lease(
        self, tenant: str, holder: str, token: int, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        """Extend the lease while ``holder`` still holds it with ``token`` and it has not expired:
        the fencing check before every applied change. False: the lease is lost, stop at once."""
        now = now or utcnow()
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

    def release_lease(self, tenant: str, holder: str, token: int) -> None:
        """Give the lease up (it expires now), if ``holder`` still holds it with ``token``. The row
        stays, so the next holder's token is still larger than every token before it."""
        with self._tx() as s:
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.tenant == tenant, LeaseRow.holder == holder, LeaseRow.token == token)
                .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
            )

    def lease_holder(self, tenant: str, now: datetime | None = None) -> str | None:
        now = now or utcnow()
        with self._tx() as s:
            row = s.get(LeaseRow, tenant)
            return row.holder if row is not None and aware(row.expires_at) > now else None
