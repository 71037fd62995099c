"""Owned groups: the groups this replicator created (or started to create) for a tenant, the roles
it granted them and the members it added."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from state.db import Database, record_of, utcnow
from state.tables import OwnedGroupRow


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
    created_at: datetime | None = None
    """When the group was first recorded (its create's intent)."""
    project_role: str = ""
    """The meshProject role the group stands for ("" where not recorded yet)."""


class OwnedGroupStore(Database):
    """The owned-group records of ``Store``."""

    def owned_groups(self, platform: str, tenant: str) -> list[OwnedGroupRecord]:
        with self._tx() as s:
            rows = s.scalars(
                select(OwnedGroupRow)
                .where(OwnedGroupRow.platform == platform, OwnedGroupRow.tenant == tenant)
                .order_by(OwnedGroupRow.name)
            )
            return [_owned(r) for r in rows]

    def record_group_intent(
        self, platform: str, tenant: str, alias: str, name: str, project_role: str = ""
    ) -> None:
        """Written before the create call: a crash after it leaves a pending record the next run
        completes (the driver adopts the group by name if it carries our marker)."""
        now = utcnow()
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is None:
                s.add(_pending(platform, tenant, alias, name, now, project_role))
            else:
                row.alias, row.updated_at = alias, now
                row.project_role = project_role or row.project_role

    def set_group_project_role(self, platform: str, tenant: str, name: str, project_role: str) -> None:
        """Record the meshProject role an owned group stands for (groups recorded before the role
        was, filled in by the next applying run)."""
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is not None and row.project_role != project_role:
                row.project_role, row.updated_at = project_role, utcnow()

    def confirm_group(self, platform: str, tenant: str, name: str, platform_id: str, alias: str) -> None:
        now = utcnow()
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is None:
                row = _pending(platform, tenant, alias, name, now)
                s.add(row)
            row.platform_id, row.state, row.updated_at, row.alias = platform_id, "active", now, alias

    def set_group_roles(self, platform: str, tenant: str, name: str, roles: Iterable[str]) -> None:
        self._edit_group(platform, tenant, name, "roles", lambda _: set(roles), always=True)

    def add_group_role(self, platform: str, tenant: str, name: str, role: str) -> None:
        self._edit_group(platform, tenant, name, "roles", lambda roles: roles | {role})

    def remove_group_role(self, platform: str, tenant: str, name: str, role: str) -> None:
        self._edit_group(platform, tenant, name, "roles", lambda roles: roles - {role})

    def add_group_member(self, platform: str, tenant: str, name: str, user_id: str) -> None:
        self._edit_group(platform, tenant, name, "members", lambda members: members | {user_id})

    def remove_group_member(self, platform: str, tenant: str, name: str, user_id: str) -> None:
        self._edit_group(platform, tenant, name, "members", lambda members: members - {user_id})

    def forget_group(self, platform: str, tenant: str, name: str) -> None:
        with self._tx() as s:
            s.execute(
                delete(OwnedGroupRow).where(
                    OwnedGroupRow.platform == platform,
                    OwnedGroupRow.tenant == tenant,
                    OwnedGroupRow.name == name,
                )
            )

    def _edit_group(
        self,
        platform: str,
        tenant: str,
        name: str,
        column: Literal["roles", "members"],
        edit: Callable[[set[str]], set[str]],
        *,
        always: bool = False,
    ) -> None:
        """In one transaction, the group's ``column`` becomes ``edit`` of it (sorted), with a new
        ``updated_at``, when that changes it or ``always``; a group without a record is left alone."""
        with self._tx() as s:
            row = self._group_row(s, platform, tenant, name)
            if row is None:
                return
            before = set(getattr(row, column) or ())
            after = edit(before)
            if always or after != before:
                setattr(row, column, sorted(after))
                row.updated_at = utcnow()

    @staticmethod
    def _group_row(s: Session, platform: str, tenant: str, name: str) -> OwnedGroupRow | None:
        return s.scalar(
            select(OwnedGroupRow).where(
                OwnedGroupRow.platform == platform, OwnedGroupRow.tenant == tenant, OwnedGroupRow.name == name
            )
        )


def _pending(
    platform: str, tenant: str, alias: str, name: str, now: datetime, project_role: str = ""
) -> OwnedGroupRow:
    """A new record of a group about to be created: no platform id, no roles, state pending."""
    return OwnedGroupRow(
        platform=platform,
        tenant=tenant,
        alias=alias,
        name=name,
        project_role=project_role,
        platform_id=None,
        roles=[],
        state="pending",
        created_at=now,
        updated_at=now,
    )


def _owned(r: OwnedGroupRow) -> OwnedGroupRecord:
    return record_of(OwnedGroupRecord, r, roles=frozenset(r.roles or ()), members=frozenset(r.members or ()))
