"""plan: the ordered changes that turn what a tenant is into what it should be. Pure.

Rules it keeps (ARCHITECTURE "Safety rules"):
- it only changes groups the state store records as ours and the driver observed with our marker;
- access is given before it is taken (create, add, grant before revoke, remove, delete), and a
  renamed group is created and filled before the old one is emptied and deleted;
- the deletion guard withholds every removal when the desired state of a tenant with managed
  members is empty or when more memberships would go than ``maxDeletions`` allows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from platforms.contract import (
    ACTION_ORDER,
    Action,
    Change,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PlatformUser,
)
from replicator.core.model import DesiredGroup, DesiredTenant, ReplicationWarning, WarningCode


@dataclass(frozen=True)
class GrantPolicy:
    """What to do with roles on an owned group that the replicator did not grant."""

    mode: str  # "remove" | "keep" | "keepMatching"
    pattern: str | None = None

    def keeps(self, role: str) -> bool:
        if self.mode == "keep":
            return True
        if self.mode == "keepMatching" and self.pattern is not None:
            return re.fullmatch(self.pattern, role) is not None
        return False

    def describe(self) -> str:
        return f"keepMatching {self.pattern}" if self.mode == "keepMatching" else self.mode


@dataclass(frozen=True)
class Guard:
    """Settings of the deletion guard for one tenant."""

    limit: int
    """Most memberships this run may take away."""
    allow_deletions: bool = False
    """The operator confirmed (``--allow-deletions``)."""
    source_empty: bool = False
    """The inventory as a whole came back empty (a failed or truncated source)."""


@dataclass(frozen=True)
class KeptGrant:
    group: str
    role: str
    reason: str


@dataclass(frozen=True)
class Plan:
    tenant: DesiredTenant
    changes: tuple[Change, ...]
    warnings: tuple[ReplicationWarning, ...]
    kept: tuple[KeptGrant, ...] = ()
    blocked: str | None = None
    """Why the deletion guard withheld the removals (DELETION_GUARD), or None."""
    withheld: tuple[Change, ...] = ()
    forget: tuple[str, ...] = ()
    """Owned groups that vanished from the platform: the store forgets them."""
    fingerprint: str = ""
    """Hash of the observation this plan was computed from (a stale plan is refused)."""
    resolved: Mapping[str, tuple[PlatformUser, ...]] = field(default_factory=dict)

    @property
    def adds(self) -> int:
        return sum(1 for c in self.changes if c.action.adds)

    @property
    def removes(self) -> int:
        return sum(1 for c in self.changes if not c.action.adds)


def order_changes(changes: Sequence[Change]) -> tuple[Change, ...]:
    """Stable order: by action (create, ensure, add, grant, revoke, remove, delete), then group, subject."""
    rank = {a: i for i, a in enumerate(ACTION_ORDER)}
    return tuple(sorted(changes, key=lambda c: (rank[c.action], c.group, c.subject)))


def resolve_members(
    group: DesiredGroup,
    lookups: Mapping[str, tuple[PlatformUser, ...]],
    missing: list[str] | None = None,
) -> tuple[dict[PlatformUser, str], dict[PlatformUser, str], list[ReplicationWarning]]:
    """Platform users of a desired group: (found user -> transformed euid, candidates of ambiguous
    lookups -> transformed euid, warnings). With ``missing`` (a driver that ensures users), a
    transformed euid nobody matches is appended there instead of warned about."""
    found: dict[PlatformUser, str] = {}
    candidates: dict[PlatformUser, str] = {}
    warnings: list[ReplicationWarning] = []
    for m in group.members:
        if m.platform_euid not in lookups:
            raise ValueError(f"no lookup result for {m.platform_euid!r}: lookups must be complete")
        matches = lookups[m.platform_euid]
        if not matches and missing is not None:
            if m.platform_euid not in missing:
                missing.append(m.platform_euid)
        elif not matches:
            warnings.append(
                ReplicationWarning(
                    WarningCode.USER_NOT_FOUND,
                    m.user,
                    f"user {m.user}: {m.platform_euid!r} (euid {m.euid!r}) does not exist on the platform",
                    user=m.user,
                    euid=m.euid,
                )
            )
        elif len(matches) > 1:
            candidates.update((u, m.platform_euid) for u in matches)
            warnings.append(
                ReplicationWarning(
                    WarningCode.AMBIGUOUS_MATCH,
                    m.user,
                    f"user {m.user}: {m.platform_euid!r} matches {len(matches)} platform users "
                    f"({', '.join(sorted(u.name for u in matches))}): nobody is added",
                    user=m.user,
                    euid=m.euid,
                )
            )
        else:
            user = matches[0]
            if user.name != m.platform_euid:
                warnings.append(
                    ReplicationWarning(
                        WarningCode.CASE_MISMATCH,
                        m.user,
                        f"user {m.user}: {m.platform_euid!r} matched platform user {user.name!r} "
                        "(only the case differs)",
                        user=m.user,
                        euid=m.euid,
                    )
                )
            if user.awaiting_login:
                warnings.append(
                    ReplicationWarning(
                        WarningCode.USER_AWAITING_LOGIN,
                        m.user,
                        f"user {m.user}: the platform has no user {user.name!r} yet; the membership "
                        "takes effect when that exact name first logs in (check the euid pattern if "
                        "it never does)",
                        user=m.user,
                        euid=m.euid,
                    )
                )
            found[user] = m.platform_euid
    return found, candidates, warnings


def plan_tenant(
    desired: DesiredTenant,
    lookups: Mapping[str, tuple[PlatformUser, ...]],
    observed: ObservedTenant,
    owned: Sequence[OwnedGroup],
    policy: GrantPolicy,
    guard: Guard,
    ensure_missing: bool = False,
) -> Plan:
    """Diff desired vs observed into ordered changes, guarded against mass removal.

    ``ensure_missing`` (the driver creates users, ``Driver.ensures_users``): a transformed euid the
    lookup did not find is one ``ENSURE_USER`` per tenant, and each group that should hold it gets
    an ``ADD_MEMBER`` without a platform user (the engine fills it in once the user exists)."""
    warnings: set[ReplicationWarning] = set(desired.warnings)
    changes: list[Change] = []
    kept: list[KeptGrant] = []
    granted_by_us = {o.name: o.roles for o in owned}
    by_name: dict[str, ObservedGroup] = {g.name: g for g in observed.groups}
    by_alias: dict[str, list[ObservedGroup]] = {}
    for g in observed.groups:
        by_alias.setdefault(g.alias, []).append(g)

    targets: dict[str, ObservedGroup | None] = {}  # alias -> the group that serves it (None: to create)
    desired_members: dict[str, dict[PlatformUser, str]] = {}
    ensured: set[str] = set()

    for group in desired.groups:
        missing: list[str] | None = [] if ensure_missing else None
        members, candidates, member_warnings = resolve_members(group, lookups, missing)
        warnings.update(member_warnings)
        # An ambiguous lookup adds nobody, but a candidate who already holds this role keeps it,
        # whichever group of the alias they are in (so a rename carries them over).
        holders = {u.id for g in by_alias.get(group.alias, []) for u in g.members}
        for user, euid in candidates.items():
            if user.id in holders:
                members.setdefault(user, euid)
        desired_members[group.alias] = members
        current = by_name.get(group.name)
        if current is None and group.name in observed.foreign:
            warnings.add(
                ReplicationWarning(
                    WarningCode.FOREIGN_GROUP_NAME_TAKEN,
                    group.name,
                    f"group {group.name!r} exists but was not created by this replicator: "
                    "it is left untouched"
                    + (
                        "; the current group of this role stays in place" if by_alias.get(group.alias) else ""
                    ),
                )
            )
            # Make before break: without the new group, the old one keeps serving the alias.
            current = next(iter(sorted(by_alias.get(group.alias, []), key=lambda g: g.name)), None)
            if current is None:
                continue
        targets[group.alias] = current
        serving = group.name if current is None else current.name
        for euid in missing or ():
            if euid not in ensured:
                ensured.add(euid)
                changes.append(Change(Action.ENSURE_USER, serving, group.alias, euid=euid))
            changes.append(Change(Action.ADD_MEMBER, serving, group.alias, euid=euid))
        if current is None:
            changes.append(Change(Action.CREATE_GROUP, group.name, group.alias))
            changes += [
                Change(Action.ADD_MEMBER, group.name, group.alias, user=u, euid=e) for u, e in members.items()
            ]
            changes += [Change(Action.GRANT, group.name, group.alias, role=r) for r in group.roles]
            continue
        changes += _sync_group(group, current, members, granted_by_us, policy, kept)

    target_names = {t.name for t in targets.values() if t is not None}
    desired_aliases = {g.alias for g in desired.groups}
    role_of = _role_of(desired, owned)
    for g in sorted(observed.groups, key=lambda g: g.name):
        if g.name in target_names:
            continue
        replaced = g.alias in desired_aliases
        successor = next((d.name for d in desired.groups if d.project_role == role_of(g)), None)
        lost = sorted(r for r in g.roles if r not in granted_by_us.get(g.name, frozenset()))
        note = (
            ("tenant removed from the inventory" if desired.removed else "tenant deleted")
            if desired.deleted
            else f"renamed: replaced by {_name_of(desired, g.alias)}"
            if replaced
            else f"renamed: replaced by {successor} (the role {role_of(g)} has a new platformGroupAlias)"
            if successor
            else "no role maps to this alias any more"
        )
        changes += [
            Change(
                Action.REVOKE,
                g.name,
                g.alias,
                role=r,
                note=note + ("; granted outside the replicator, not carried over" if r in lost else ""),
            )
            for r in sorted(g.roles)
        ]
        if desired.deleted and desired.keep_groups:
            continue  # skipGroupCleanup: the group stays, without roles on this tenant
        changes.append(
            Change(
                Action.DELETE_GROUP,
                g.name,
                g.alias,
                note=note + (f"; {len(g.members)} members" if g.members else ""),
            )
        )

    ordered = order_changes(changes)
    blocked = _guard(desired, observed, owned, desired_members, ordered, guard)
    applied = ordered
    withheld: tuple[Change, ...] = ()
    if blocked:
        applied = tuple(c for c in ordered if c.action.adds)
        withheld = tuple(c for c in ordered if not c.action.adds)
    return Plan(
        tenant=desired,
        changes=applied,
        warnings=tuple(sorted(warnings)),
        kept=tuple(kept),
        blocked=blocked,
        withheld=withheld,
        forget=tuple(sorted(observed.vanished)),
        fingerprint=fingerprint(observed, owned),
        resolved={m.platform_euid: lookups[m.platform_euid] for g in desired.groups for m in g.members},
    )


def _name_of(desired: DesiredTenant, alias: str) -> str:
    return next((g.name for g in desired.groups if g.alias == alias), "?")


def _sync_group(
    group: DesiredGroup,
    current: ObservedGroup,
    members: dict[PlatformUser, str],
    granted_by_us: Mapping[str, frozenset[str]],
    policy: GrantPolicy,
    kept: list[KeptGrant],
) -> list[Change]:
    changes: list[Change] = []
    have = {u.id: u for u in current.members}
    want = {u.id: u for u in members}
    changes += [
        Change(Action.ADD_MEMBER, current.name, group.alias, user=u, euid=members[u])
        for uid, u in want.items()
        if uid not in have
    ]
    changes += [
        Change(Action.REMOVE_MEMBER, current.name, group.alias, user=u)
        for uid, u in have.items()
        if uid not in want
    ]
    changes += [Change(Action.GRANT, current.name, group.alias, role=r) for r in group.roles - current.roles]
    ours = granted_by_us.get(current.name, frozenset())
    for role in sorted(current.roles - group.roles):
        if role in ours:
            changes.append(
                Change(Action.REVOKE, current.name, group.alias, role=role, note="no longer mapped")
            )
        elif policy.keeps(role):
            kept.append(
                KeptGrant(
                    current.name, role, f"granted outside the replicator; externalGrants: {policy.describe()}"
                )
            )
        else:
            changes.append(
                Change(
                    Action.REVOKE,
                    current.name,
                    group.alias,
                    role=role,
                    note=f"granted outside the replicator; externalGrants: {policy.describe()}",
                )
            )
    return changes


def _guard(
    desired: DesiredTenant,
    observed: ObservedTenant,
    owned: Sequence[OwnedGroup],
    desired_members: Mapping[str, Mapping[PlatformUser, str]],
    changes: Sequence[Change],
    guard: Guard,
) -> str | None:
    """Why removals must wait for an operator, or None. What counts is access taken away for
    good, (meshProject role, user) pairs: a member moved from a renamed group to its successor
    (a new name pattern or platformGroupAlias, the same role) loses nothing."""
    if guard.allow_deletions or desired.deleted or all(c.action.adds for c in changes):
        return None
    role = _role_of(desired, owned)
    managed = {(role(g), u.id) for g in observed.groups for u in g.members}
    wanted = {
        (g.project_role or f"alias {g.alias}", u.id) for g in desired.groups for u in desired_members[g.alias]
    }
    lost = managed - wanted
    if guard.source_empty:
        return "DELETION_GUARD: the inventory is empty (a failed or truncated source?); nothing is removed"
    if not lost:
        return None
    if desired.member_count == 0:
        return (
            f"DELETION_GUARD: the desired state of {desired.ref.key} has no members but "
            f"{len(managed)} managed memberships exist; nothing is removed"
        )
    if len(lost) > guard.limit:
        return (
            f"DELETION_GUARD: {len(lost)} of {len(managed)} managed memberships would be removed, "
            f"more than maxDeletions allows ({guard.limit}); nothing is removed"
        )
    return None


def _role_of(desired: DesiredTenant, owned: Sequence[OwnedGroup]) -> Callable[[ObservedGroup], str]:
    """The meshProject role an owned group stands for: as the store recorded it; else that of the
    desired group of its alias; else, for a group recorded before roles were, that of the one
    desired group granted exactly the platform roles we granted it (a renamed alias keeps them);
    else its alias, which then only a group of the same alias carries on."""
    recorded = {o.name: o.project_role for o in owned if o.project_role}
    granted = {o.name: o.roles for o in owned}
    by_alias = {g.alias: g.project_role for g in desired.groups if g.project_role}
    by_roles: dict[frozenset[str], list[str]] = {}
    for g in desired.groups:
        if g.roles and g.project_role:
            by_roles.setdefault(g.roles, []).append(g.project_role)

    def role(g: ObservedGroup) -> str:
        if g.name in recorded:
            return recorded[g.name]
        if g.alias in by_alias:
            return by_alias[g.alias]
        same = by_roles.get(granted.get(g.name, frozenset()), [])
        return same[0] if len(same) == 1 else f"alias {g.alias}"

    return role


def fingerprint(observed: ObservedTenant, owned: Sequence[OwnedGroup]) -> str:
    """A stable hash of what a plan was computed from."""
    doc = {
        "groups": sorted(
            [g.id, g.name, g.alias, sorted(u.id for u in g.members), sorted(g.roles)] for g in observed.groups
        ),
        "vanished": sorted(observed.vanished),
        "foreign": sorted(observed.foreign.items()),
        "owned": sorted(
            [o.alias, o.name, o.platform_id or "", sorted(o.roles), sorted(o.members)] for o in owned
        ),
    }
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
