"""plan with ``ensure_missing``: a driver that creates missing users (OpenStack's federatedIdp) gets
one ENSURE_USER per euid and tenant, and ADD_MEMBER changes the engine completes after it."""

from __future__ import annotations

from platforms.contract import (
    Action,
    Change,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PlatformUser,
    TenantRef,
)
from replicator.cli.render import change_json, change_text
from replicator.core.model import DesiredGroup, DesiredMember, DesiredTenant, WarningCode
from replicator.core.plan import GrantPolicy, Guard, plan_tenant

REF = TenantRef("finance/ledger/openstack.test", "openstack.test", "p-1")
KEEP = GrantPolicy("keep")
OPEN = Guard(limit=10**9, allow_deletions=True)
ALICE = PlatformUser("id-alice", "alice")


def dg(alias: str, *euids: str, roles: tuple[str, ...] = ("member",)) -> DesiredGroup:
    members = tuple(DesiredMember(e, f"u-{e}", e, ("binding",)) for e in euids)
    return DesiredGroup(alias, f"g-{alias}", frozenset(roles), members, alias)


def dt(*groups: DesiredGroup) -> DesiredTenant:
    return DesiredTenant(REF, "lz", tuple(groups), (), bindings=1)


def lookups(*euids: str) -> dict[str, tuple[PlatformUser, ...]]:
    found = {"alice": (ALICE,)}
    return {e: found.get(e, ()) for e in euids}


def test_without_ensure_a_missing_user_is_a_warning() -> None:
    plan = plan_tenant(
        dt(dg("admin", "alice", "zed")), lookups("alice", "zed"), ObservedTenant(), [], KEEP, OPEN
    )
    assert [w.code for w in plan.warnings] == [WarningCode.USER_NOT_FOUND]
    assert not any(c.action is Action.ENSURE_USER for c in plan.changes)
    assert not any(c.action is Action.ADD_MEMBER and c.user is None for c in plan.changes)


def test_ensure_once_per_euid_per_tenant_then_add_to_every_group() -> None:
    desired = dt(dg("admin", "alice", "zed"), dg("reader", "zed", "yan"))
    plan = plan_tenant(
        desired, lookups("alice", "zed", "yan"), ObservedTenant(), [], KEEP, OPEN, ensure_missing=True
    )
    assert plan.warnings == ()
    ensures = [c for c in plan.changes if c.action is Action.ENSURE_USER]
    assert sorted(c.euid or "" for c in ensures) == ["yan", "zed"]
    adds = [(c.group, c.euid, c.user) for c in plan.changes if c.action is Action.ADD_MEMBER]
    assert sorted(adds, key=str) == sorted(
        [
            ("g-admin", "alice", ALICE),
            ("g-admin", "zed", None),
            ("g-reader", "zed", None),
            ("g-reader", "yan", None),
        ],
        key=str,
    )
    actions = [c.action for c in plan.changes]
    # create, then ensure, then add: the order the engine needs
    assert actions.index(Action.ENSURE_USER) > actions.index(Action.CREATE_GROUP)
    assert max(i for i, a in enumerate(actions) if a is Action.ENSURE_USER) < actions.index(Action.ADD_MEMBER)


def test_ensure_into_an_existing_group_and_converged_is_empty() -> None:
    existing = ObservedGroup("pid-admin", "g-admin", "admin", frozenset({ALICE}), frozenset({"member"}))
    owned = [OwnedGroup("admin", "g-admin", "pid-admin", frozenset({"member"}))]
    observed = ObservedTenant((existing,))
    plan = plan_tenant(
        dt(dg("admin", "alice", "zed")),
        lookups("alice", "zed"),
        observed,
        owned,
        KEEP,
        OPEN,
        ensure_missing=True,
    )
    assert plan.changes == (
        Change(Action.ENSURE_USER, "g-admin", "admin", euid="zed"),
        Change(Action.ADD_MEMBER, "g-admin", "admin", euid="zed"),
    )
    converged = plan_tenant(
        dt(dg("admin", "alice")), lookups("alice"), observed, owned, KEEP, OPEN, ensure_missing=True
    )
    assert converged.changes == ()


def test_a_missing_user_of_a_foreign_named_group_without_fallback_is_not_ensured() -> None:
    observed = ObservedTenant(foreign={"g-admin": "x"})
    plan = plan_tenant(dt(dg("admin", "zed")), lookups("zed"), observed, [], KEEP, OPEN, ensure_missing=True)
    assert plan.changes == ()
    assert [w.code for w in plan.warnings] == [WarningCode.FOREIGN_GROUP_NAME_TAKEN]


def test_render_ensure_and_add_without_user() -> None:
    ensure = Change(Action.ENSURE_USER, "g-admin", "admin", euid="zed@example.com")
    add = Change(Action.ADD_MEMBER, "g-admin", "admin", euid="zed@example.com")
    assert change_text(ensure) == "+ ensure user zed@example.com"
    assert change_text(add) == "+ add member zed@example.com to g-admin"
    assert change_json(add) == {
        "action": "add_member",
        "group": "g-admin",
        "alias": "admin",
        "euid": "zed@example.com",
    }
