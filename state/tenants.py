"""Tenants: the last known life-cycle status of each tenant the replicator worked on."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from state.db import Database, utcnow
from state.tables import OwnedGroupRow, TenantRow


@dataclass(frozen=True, order=True)
class TenantRecord:
    key: str
    platform: str
    local_id: str
    status: str
    """Active, Revoking, DeletingGroups, Deleted (or Unknown: owned groups without a record)."""


class TenantStore(Database):
    """The tenant records of ``Store``."""

    def set_tenant_status(self, tenant: str, platform: str, local_id: str, status: str) -> None:
        self._put_tenant(tenant, platform, local_id, status, replace=True)

    def ensure_tenant(self, tenant: str, platform: str, local_id: str) -> None:
        """Record a tenant (status Active) before its first change, so that a tenant whose first run
        crashed is still known when it has to be deleted; an existing record is left as it is."""
        self._put_tenant(tenant, platform, local_id, "Active", replace=False)

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

    def _put_tenant(self, tenant: str, platform: str, local_id: str, status: str, *, replace: bool) -> None:
        """In one transaction, create the tenant's record, or with ``replace`` update an existing
        one whose status or local id differ (the platform of a record never changes)."""
        with self._tx() as s:
            row = s.get(TenantRow, tenant)
            if row is None:
                s.add(
                    TenantRow(
                        key=tenant, platform=platform, local_id=local_id, status=status, updated_at=utcnow()
                    )
                )
            elif replace and (row.status != status or row.local_id != local_id):
                row.status, row.local_id, row.updated_at = status, local_id, utcnow()
