"""Plain data the pure core produces: desired tenants and replication warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from platforms.contract import TenantRef


class WarningCode(StrEnum):
    """Replication warnings: what the replicator could not do for one subject (a user without an
    euid, a user the platform does not have, a foreign group with our name, ...). A warning never
    stops the rest of the tenant."""

    USER_HAS_NO_EUID = "USER_HAS_NO_EUID"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    AMBIGUOUS_MATCH = "AMBIGUOUS_MATCH"
    CASE_MISMATCH = "CASE_MISMATCH"
    FOREIGN_GROUP_NAME_TAKEN = "FOREIGN_GROUP_NAME_TAKEN"
    BINDING_EXPIRED = "BINDING_EXPIRED"
    UNMAPPED_ROLE = "UNMAPPED_ROLE"
    USER_AWAITING_LOGIN = "USER_AWAITING_LOGIN"
    """The platform has no user object under the name yet (OpenShift creates it at the first login):
    the membership is written and takes effect once that exact name logs in."""
    PLATFORM_PENDING = "PLATFORM_PENDING"
    """The platform has not caught up with this run's own writes yet (eventual consistency): the
    tenant is requeued and the warning clears once it converges."""


@dataclass(frozen=True, order=True, slots=True)
class ReplicationWarning:
    code: WarningCode
    subject: str
    """What the warning is about: a meshUser name, a group name, a role or a binding."""
    message: str
    user: str | None = None
    euid: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.code.value, self.subject)


@dataclass(frozen=True, order=True, slots=True)
class DesiredMember:
    platform_euid: str
    """The euid after the platform's euid pattern: what the lookup matches."""
    user: str
    """meshUser name."""
    euid: str
    via: tuple[str, ...] = ()
    """The bindings that give this membership (for explain)."""


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    alias: str
    name: str
    roles: frozenset[str]
    members: tuple[DesiredMember, ...]
    project_role: str = ""
    """The meshProject role this group stands for."""


@dataclass(frozen=True)
class DesiredTenant:
    ref: TenantRef
    landing_zone: str
    groups: tuple[DesiredGroup, ...]
    warnings: tuple[ReplicationWarning, ...] = ()
    deleted: bool = False
    """Tenant deletion: revoke all access, then delete the owned groups (or keep them, emptied of
    roles, with ``skipGroupCleanup``)."""
    removed: bool = False
    """Deleted because the inventory no longer has it (allowed by ``deleteRemovedTenants`` or
    ``--allow-deletions``); implies ``deleted``."""
    keep_groups: bool = False
    """``skipGroupCleanup``: a deleted tenant's owned groups lose their roles but are not deleted."""
    bindings: int = 0
    """Bindings (expired or not) that point at the tenant's project; 0 with owned members means
    the source lost them, which the deletion guard treats as suspicious."""
    pattern_values: dict[str, str] = field(default_factory=dict, compare=False)
    """The placeholder values the group names were rendered from (for explain)."""

    @property
    def member_count(self) -> int:
        return sum(len(g.members) for g in self.groups)
