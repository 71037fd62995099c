"""An in-memory platform behind the driver contract, for engine tests.

It is a test double of *our* contract, not of any SDK: the real drivers are tested against real
backends (moto for AWS). It keeps the contract's semantics (ownership marker, idempotent changes,
complete-or-raise observation) and lets a test inject failures and count calls.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from platforms.contract import (
    Action,
    Capabilities,
    Change,
    Driver,
    ForeignObjectError,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PermanentError,
    PlatformUser,
    TenantRef,
)


class MemoryOptions(BaseModel):
    pass


@dataclass
class Group:
    id: str
    name: str
    owner: str | None  # tenant key in the marker, None = foreign
    members: set[str] = field(default_factory=set)
    roles: dict[str, set[str]] = field(default_factory=dict)  # tenant local id -> roles


@dataclass
class Platform:
    """The platform's state, shared by every driver instance a test creates."""

    users: dict[str, str] = field(default_factory=dict)  # id -> name
    groups: dict[str, Group] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    failures: dict[tuple[str, str | None], list[Exception]] = field(default_factory=dict)
    """(operation, group name or None for any) -> errors to raise on its next calls (one per call)."""
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add_user(self, name: str) -> str:
        uid = f"u{next(self._ids)}"
        self.users[uid] = name
        return uid

    def by_name(self, name: str) -> Group | None:
        return next((g for g in self.groups.values() if g.name == name), None)

    def fail(self, operation: str, *errors: Exception, group: str | None = None) -> None:
        self.failures.setdefault((operation, group), []).extend(errors)

    def call(self, operation: str, group: str | None = None) -> None:
        self.calls[operation] += 1
        for key in ((operation, group), (operation, None)):
            queued = self.failures.get(key)
            if queued:
                raise queued.pop(0)

    def member_names(self, group_name: str) -> list[str]:
        g = self.by_name(group_name)
        assert g is not None, group_name
        return sorted(self.users[m] for m in g.members)


class MemoryDriver(Driver):
    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="keep", lookup_attribute="name", group_name_prefix="mem-"
    )
    options_model: ClassVar[type[BaseModel]] = MemoryOptions

    def __init__(self, identifier: str, platform: Platform) -> None:
        super().__init__(identifier, MemoryOptions())
        self.p = platform

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        self.p.call("lookup_users")
        return {
            e: tuple(
                PlatformUser(i, n) for i, n in sorted(self.p.users.items()) if n.casefold() == e.casefold()
            )
            for e in euids
        }

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        self.p.call("observe", tenant.key)  # fail("observe", ..., group=KEY): only that tenant's
        groups, vanished, foreign = [], [], {}
        for o in owned:
            g = self.p.groups.get(o.platform_id or "") or (
                self.p.by_name(o.name) if o.platform_id is None else None
            )
            if g is None:
                vanished.append(o.name)
            elif g.owner != tenant.key:
                foreign[g.name] = g.id
            else:
                groups.append(self._observed(tenant, g, o.alias))
        owned_names = {o.name for o in owned}
        for alias, name in desired_names.items():
            g = self.p.by_name(name)
            if name in owned_names or g is None:
                continue
            if g.owner == tenant.key:
                groups.append(self._observed(tenant, g, alias))
            else:
                foreign[name] = g.id
        return ObservedTenant(tuple(groups), tuple(vanished), foreign)

    def _observed(self, tenant: TenantRef, g: Group, alias: str) -> ObservedGroup:
        return ObservedGroup(
            g.id,
            g.name,
            alias,
            frozenset(PlatformUser(m, self.p.users.get(m, m)) for m in g.members),
            frozenset(g.roles.get(tenant.local_id, set())),
        )

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        self.p.call(change.action.value, change.group)
        if change.action is Action.CREATE_GROUP:
            existing = self.p.by_name(change.group)
            if existing is not None:
                if existing.owner != tenant.key:
                    raise ForeignObjectError(f"{change.group} exists and is not ours")
                return existing.id
            gid = f"g{next(self.p._ids)}"
            self.p.groups[gid] = Group(gid, change.group, tenant.key)
            return gid
        g = self.p.groups.get(group_id or "")
        if g is None:
            if change.action is Action.DELETE_GROUP:
                return None
            raise PermanentError(f"group {change.group} ({group_id}) does not exist")
        if change.action is Action.ADD_MEMBER and change.user:
            g.members.add(change.user.id)
        elif change.action is Action.REMOVE_MEMBER and change.user:
            g.members.discard(change.user.id)
        elif change.action is Action.GRANT and change.role:
            g.roles.setdefault(tenant.local_id, set()).add(change.role)
        elif change.action is Action.REVOKE and change.role:
            g.roles.get(tenant.local_id, set()).discard(change.role)
        elif change.action is Action.DELETE_GROUP:
            if g.owner != tenant.key:
                raise ForeignObjectError(f"{change.group} is not ours")
            del self.p.groups[g.id]
        return None
