"""plan: desired vs observed into ordered, guarded changes (warnings, external grants, the deletion
guard, tenant deletion)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import pytest

from platforms.contract import (
    ACTION_ORDER,
    Action,
    Change,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PlatformUser,
    TenantRef,
)
from replicator.core.config import ReplicationConfig
from replicator.core.model import DesiredGroup, DesiredMember, DesiredTenant, ReplicationWarning, WarningCode
from replicator.core.plan import (
    GrantPolicy,
    Guard,
    KeptGrant,
    Plan,
    fingerprint,
    order_changes,
    plan_tenant,
    resolve_members,
)

REF = TenantRef("finance/ledger/aws.eu-central-1", "aws.eu-central-1", "123456789012")
KEEP = GrantPolicy("keep")
REMOVE = GrantPolicy("remove")
OPEN = Guard(limit=10**9, allow_deletions=True)
STRICT = Guard(limit=0)


def pu(name: str, uid: str | None = None) -> PlatformUser:
    return PlatformUser(uid or f"id-{name}", name)


ALICE, BOB, CAROL, DAVE, EVE = pu("alice"), pu("bob"), pu("carol"), pu("dave"), pu("eve")


def dm(euid: str, user: str | None = None) -> DesiredMember:
    return DesiredMember(euid, user or f"u-{euid}", euid, ("binding",))


def dg(alias: str, *euids: str, roles: Iterable[str] = (), name: str | None = None) -> DesiredGroup:
    return DesiredGroup(alias, name or f"g-{alias}", frozenset(roles), tuple(dm(e) for e in euids), alias)


def dt(
    *groups: DesiredGroup, deleted: bool = False, warnings: Sequence[ReplicationWarning] = ()
) -> DesiredTenant:
    return DesiredTenant(REF, "aws-default", tuple(groups), tuple(warnings), deleted=deleted, bindings=1)


def og(
    alias: str, *members: PlatformUser, roles: Iterable[str] = (), name: str | None = None
) -> ObservedGroup:
    name = name or f"g-{alias}"
    return ObservedGroup(f"pid-{name}", name, alias, frozenset(members), frozenset(roles))


def ot(
    *groups: ObservedGroup, vanished: Sequence[str] = (), foreign: Mapping[str, str] | None = None
) -> ObservedTenant:
    return ObservedTenant(tuple(groups), tuple(vanished), dict(foreign or {}))


def owned_of(*groups: ObservedGroup, roles: Mapping[str, Iterable[str]] | None = None) -> list[OwnedGroup]:
    """Owned records of observed groups; by default we granted every role they have."""
    roles = roles or {}
    return [OwnedGroup(g.alias, g.name, g.id, frozenset(roles.get(g.name, g.roles))) for g in groups]


def lookups_for(*users: PlatformUser) -> dict[str, tuple[PlatformUser, ...]]:
    return {u.name: (u,) for u in users}


LOOKUPS = lookups_for(ALICE, BOB, CAROL, DAVE, EVE)


def create(group: str, alias: str) -> Change:
    return Change(Action.CREATE_GROUP, group, alias)


def add(group: str, alias: str, user: PlatformUser, euid: str | None = None) -> Change:
    return Change(Action.ADD_MEMBER, group, alias, user=user, euid=euid or user.name)


def remove(group: str, alias: str, user: PlatformUser) -> Change:
    return Change(Action.REMOVE_MEMBER, group, alias, user=user)


def grant(group: str, alias: str, role: str) -> Change:
    return Change(Action.GRANT, group, alias, role=role)


def revoke(group: str, alias: str, role: str, note: str) -> Change:
    return Change(Action.REVOKE, group, alias, role=role, note=note)


def delete(group: str, alias: str, note: str) -> Change:
    return Change(Action.DELETE_GROUP, group, alias, note=note)


def plan(
    desired: DesiredTenant,
    observed: ObservedTenant | None = None,
    owned: Sequence[OwnedGroup] | None = None,
    *,
    lookups: Mapping[str, tuple[PlatformUser, ...]] = LOOKUPS,
    policy: GrantPolicy = KEEP,
    guard: Guard = OPEN,
) -> Plan:
    observed = observed or ot()
    owned = owned_of(*observed.groups) if owned is None else owned
    return plan_tenant(desired, lookups, observed, owned, policy, guard)


def codes(p: Plan) -> list[tuple[str, str]]:
    return [w.key for w in p.warnings]


# --- fresh and converged --------------------------------------------------------------------------


def test_fresh_tenant_creates_then_adds_then_grants() -> None:
    desired = dt(dg("admin", "bob", "alice", roles=["r2", "r1"]), dg("user", "carol", roles=["r3"]))
    p = plan(desired, guard=STRICT)
    assert p.changes == (
        create("g-admin", "admin"),
        create("g-user", "user"),
        add("g-admin", "admin", ALICE),
        add("g-admin", "admin", BOB),
        add("g-user", "user", CAROL),
        grant("g-admin", "admin", "r1"),
        grant("g-admin", "admin", "r2"),
        grant("g-user", "user", "r3"),
    )
    assert p.blocked is None
    assert p.withheld == ()
    assert p.warnings == ()
    assert p.kept == ()
    assert p.forget == ()
    assert (p.adds, p.removes) == (8, 0)
    assert p.tenant is desired
    assert p.resolved == {"alice": (ALICE,), "bob": (BOB,), "carol": (CAROL,)}


def test_fresh_group_without_members_is_created_and_granted() -> None:
    p = plan(dt(dg("reader", roles=["read"])))
    assert p.changes == (create("g-reader", "reader"), grant("g-reader", "reader", "read"))


def test_converged_tenant_has_no_changes() -> None:
    observed = ot(og("admin", ALICE, BOB, roles=["r1", "r2"]), og("user", roles=["r3"]))
    desired = dt(dg("admin", "alice", "bob", roles=["r1", "r2"]), dg("user", roles=["r3"]))
    p = plan(desired, observed, guard=STRICT)
    assert p.changes == ()
    assert p.withheld == ()
    assert p.blocked is None
    assert p.kept == ()
    assert p.warnings == ()
    assert p.fingerprint == fingerprint(observed, owned_of(*observed.groups))


def test_desired_warnings_are_carried_into_the_plan() -> None:
    w = ReplicationWarning(WarningCode.UNMAPPED_ROLE, "auditor", "unmapped")
    p = plan(dt(dg("admin", roles=["r1"]), warnings=[w]), ot(og("admin", roles=["r1"])))
    assert p.warnings == (w,)


# --- members and roles ----------------------------------------------------------------------------


def test_member_added_and_member_removed() -> None:
    observed = ot(og("admin", BOB, DAVE, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", "bob", roles=["r1"])), observed, guard=Guard(limit=1))
    assert p.changes == (add("g-admin", "admin", ALICE), remove("g-admin", "admin", DAVE))
    assert p.blocked is None
    assert (p.adds, p.removes) == (1, 1)


def test_members_are_compared_by_platform_id() -> None:
    renamed_alice = PlatformUser(ALICE.id, "alice.renamed")
    observed = ot(og("admin", renamed_alice, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed)
    assert p.changes == ()


def test_role_granted_to_existing_group() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", roles=["r1", "r2", "r0"])), observed)
    assert p.changes == (grant("g-admin", "admin", "r0"), grant("g-admin", "admin", "r2"))


def test_role_we_granted_and_no_longer_mapped_is_revoked_even_under_keep() -> None:
    observed = ot(og("admin", ALICE, roles=["r1", "old"]))
    owned = owned_of(*observed.groups, roles={"g-admin": ["r1", "old"]})
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, owned, policy=KEEP)
    assert p.changes == (revoke("g-admin", "admin", "old", "no longer mapped"),)
    assert p.kept == ()


def test_external_role_is_kept_under_keep() -> None:
    observed = ot(og("admin", ALICE, roles=["r1", "ext"]))
    owned = owned_of(*observed.groups, roles={"g-admin": ["r1"]})
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, owned, policy=KEEP)
    assert p.changes == ()
    assert p.kept == (KeptGrant("g-admin", "ext", "granted outside the replicator; externalGrants: keep"),)


def test_external_role_is_revoked_under_remove() -> None:
    observed = ot(og("admin", ALICE, roles=["r1", "ext"]))
    owned = owned_of(*observed.groups, roles={"g-admin": ["r1"]})
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, owned, policy=REMOVE)
    assert p.changes == (
        revoke("g-admin", "admin", "ext", "granted outside the replicator; externalGrants: remove"),
    )
    assert p.kept == ()


def test_external_roles_under_keep_matching() -> None:
    policy = GrantPolicy("keepMatching", r"arn:.*:ps-audit-\d+")
    observed = ot(og("admin", ALICE, roles=["r1", "arn:x:ps-audit-7", "arn:x:ps-audit-7-evil", "other"]))
    owned = owned_of(*observed.groups, roles={"g-admin": ["r1"]})
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, owned, policy=policy)
    note = r"granted outside the replicator; externalGrants: keepMatching arn:.*:ps-audit-\d+"
    assert p.kept == (KeptGrant("g-admin", "arn:x:ps-audit-7", note),)
    # the regular expression must match the whole role id
    assert p.changes == (
        revoke("g-admin", "admin", "arn:x:ps-audit-7-evil", note),
        revoke("g-admin", "admin", "other", note),
    )


def test_grant_policy_keeps() -> None:
    assert GrantPolicy("keep").keeps("anything")
    assert not GrantPolicy("remove").keeps("anything")
    assert GrantPolicy("keepMatching", "a.c").keeps("abc")
    assert not GrantPolicy("keepMatching", "a.c").keeps("abcd")
    assert not GrantPolicy("keepMatching", None).keeps("abc")
    assert GrantPolicy("keepMatching", "x").describe() == "keepMatching x"
    assert GrantPolicy("remove").describe() == "remove"


def test_group_of_an_alias_no_longer_mapped_is_revoked_then_deleted() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]), og("reader", BOB, CAROL, roles=["read", "ext"]))
    owned = owned_of(*observed.groups, roles={"g-reader": ["read"]})
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, owned)
    note = "no role maps to this alias any more"
    assert p.changes == (
        revoke("g-reader", "reader", "ext", note + "; granted outside the replicator, not carried over"),
        revoke("g-reader", "reader", "read", note),
        delete("g-reader", "reader", note + "; 2 members"),
    )


# --- rename (make before break) -------------------------------------------------------------------


def test_rename_creates_and_fills_the_new_group_before_the_old_one_is_emptied() -> None:
    old = og("admin", ALICE, BOB, roles=["r1", "ext"], name="old-admin")
    observed = ot(old)
    owned = owned_of(old, roles={"old-admin": ["r1"]})
    p = plan(dt(dg("admin", "alice", "bob", roles=["r1"], name="new-admin")), observed, owned, guard=STRICT)
    note = "renamed: replaced by new-admin"
    expected = (
        create("new-admin", "admin"),
        add("new-admin", "admin", ALICE),
        add("new-admin", "admin", BOB),
        grant("new-admin", "admin", "r1"),
        revoke("old-admin", "admin", "ext", note + "; granted outside the replicator, not carried over"),
        revoke("old-admin", "admin", "r1", note),
        delete("old-admin", "admin", note + "; 2 members"),
    )
    assert p.changes == expected
    # make before break, by position
    index = {c: i for i, c in enumerate(p.changes)}
    assert index[create("new-admin", "admin")] < index[add("new-admin", "admin", ALICE)]
    assert max(index[c] for c in expected[:4]) < min(index[c] for c in expected[4:])
    assert index[expected[5]] < index[expected[6]]
    # a rename loses no membership: the guard lets it through even with limit 0
    assert p.blocked is None
    assert p.withheld == ()


def test_rename_of_an_empty_group_notes_no_members() -> None:
    old = og("admin", roles=["r1"], name="old-admin")
    p = plan(dt(dg("admin", roles=["r1"], name="new-admin")), ot(old))
    assert p.changes[-1] == delete("old-admin", "admin", "renamed: replaced by new-admin")


def test_interrupted_rename_keeps_the_new_group_and_deletes_the_old() -> None:
    old = og("admin", ALICE, roles=["r1"], name="old-admin")
    new = og("admin", roles=[], name="new-admin")
    p = plan(dt(dg("admin", "alice", roles=["r1"], name="new-admin")), ot(old, new))
    note = "renamed: replaced by new-admin"
    assert p.changes == (
        add("new-admin", "admin", ALICE),
        grant("new-admin", "admin", "r1"),
        revoke("old-admin", "admin", "r1", note),
        delete("old-admin", "admin", note + "; 1 members"),
    )


# --- foreign names --------------------------------------------------------------------------------


def test_desired_name_taken_by_a_foreign_group_keeps_syncing_the_old_owned_group() -> None:
    old = og("admin", ALICE, DAVE, roles=["r1", "gone"], name="old-admin")
    observed = ot(old, foreign={"new-admin": "foreign-id"})
    owned = owned_of(old)
    p = plan(dt(dg("admin", "alice", "bob", roles=["r1", "r2"], name="new-admin")), observed, owned)
    assert codes(p) == [("FOREIGN_GROUP_NAME_TAKEN", "new-admin")]
    assert p.warnings[0].message == (
        "group 'new-admin' exists but was not created by this replicator: it is left untouched"
        "; the current group of this role stays in place"
    )
    assert all(c.group != "new-admin" for c in p.changes + p.withheld)
    assert p.changes == (
        add("old-admin", "admin", BOB),
        grant("old-admin", "admin", "r2"),
        revoke("old-admin", "admin", "gone", "no longer mapped"),
        remove("old-admin", "admin", DAVE),
    )
    assert Action.DELETE_GROUP not in {c.action for c in p.changes}


def test_desired_name_taken_by_a_foreign_group_without_an_old_group_changes_nothing() -> None:
    observed = ot(foreign={"g-admin": "foreign-id"})
    p = plan(dt(dg("admin", "alice", roles=["r1"]), dg("user", "bob", roles=["r2"])), observed)
    assert codes(p) == [("FOREIGN_GROUP_NAME_TAKEN", "g-admin")]
    assert p.warnings[0].message == (
        "group 'g-admin' exists but was not created by this replicator: it is left untouched"
    )
    assert p.changes == (create("g-user", "user"), add("g-user", "user", BOB), grant("g-user", "user", "r2"))


# --- lookups --------------------------------------------------------------------------------------


def test_user_not_found_is_warned_and_not_added() -> None:
    lookups = {**LOOKUPS, "ghost": ()}
    p = plan(dt(dg("admin", "alice", "ghost", roles=["r1"])), ot(og("admin", roles=["r1"])), lookups=lookups)
    assert p.changes == (add("g-admin", "admin", ALICE),)
    assert codes(p) == [("USER_NOT_FOUND", "u-ghost")]
    w = p.warnings[0]
    assert (w.user, w.euid) == ("u-ghost", "ghost")
    assert p.resolved["ghost"] == ()


def test_ambiguous_match_adds_nobody_and_keeps_existing_candidates() -> None:
    j1, j2 = pu("jdoe", "id-j1"), pu("JDOE", "id-j2")
    lookups = {**LOOKUPS, "jdoe": (j1, j2)}
    observed = ot(og("admin", j1, EVE, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", "jdoe", roles=["r1"])), observed, lookups=lookups)
    assert p.changes == (add("g-admin", "admin", ALICE), remove("g-admin", "admin", EVE))
    assert codes(p) == [("AMBIGUOUS_MATCH", "u-jdoe")]
    assert "JDOE, jdoe" in p.warnings[0].message


def test_ambiguous_candidates_do_not_count_as_lost_memberships() -> None:
    j1, j2 = pu("jdoe", "id-j1"), pu("JDOE", "id-j2")
    lookups = {**LOOKUPS, "jdoe": (j1, j2)}
    observed = ot(og("admin", j1, j2, ALICE, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", "jdoe", roles=["r1"])), observed, lookups=lookups, guard=STRICT)
    assert p.changes == ()
    assert p.blocked is None


def test_ambiguous_protection_does_not_depend_on_the_order_of_groups() -> None:
    # jdoe is ambiguous in "user"; candidate j1 sits in "admin" where nobody wants it.
    j1, j2 = pu("jdoe", "id-j1"), pu("JDOE", "id-j2")
    lookups = {**LOOKUPS, "jdoe": (j1, j2)}
    observed = ot(og("admin", ALICE, j1, roles=["r1"]), og("user", j1, roles=["r2"]))
    admin, user = dg("admin", "alice", roles=["r1"]), dg("user", "jdoe", roles=["r2"])
    first = plan(dt(admin, user), observed, lookups=lookups)
    second = plan(dt(user, admin), observed, lookups=lookups)
    assert set(first.changes) == set(second.changes)
    assert first.blocked == second.blocked


def test_rename_does_not_silently_drop_an_ambiguous_existing_member() -> None:
    # j1 may well be the jdoe that is wanted: like any other group, the renamed one must not lose
    # them without the deletion guard noticing (either they move to the new group or it blocks)
    j1, j2 = pu("jdoe", "id-j1"), pu("JDOE", "id-j2")
    lookups = {**LOOKUPS, "jdoe": (j1, j2)}
    old = og("admin", ALICE, j1, roles=["r1"], name="old-admin")
    desired = dt(dg("admin", "alice", "jdoe", roles=["r1"], name="new-admin"))
    p = plan(desired, ot(old), lookups=lookups, guard=STRICT)
    moved = any(c.action is Action.ADD_MEMBER and c.group == "new-admin" and c.user == j1 for c in p.changes)
    assert moved or p.blocked is not None, p.changes


def test_case_mismatch_is_added_with_a_warning() -> None:
    jdoe = pu("JDoe", "id-jdoe")
    lookups = {"jdoe": (jdoe,)}
    p = plan(dt(dg("admin", "jdoe", roles=["r1"])), ot(og("admin", roles=["r1"])), lookups=lookups)
    assert p.changes == (add("g-admin", "admin", jdoe, euid="jdoe"),)
    assert codes(p) == [("CASE_MISMATCH", "u-jdoe")]
    assert "'JDoe'" in p.warnings[0].message


def test_missing_lookup_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no lookup result for 'nobody'"):
        plan(dt(dg("admin", "alice", "nobody")), lookups=LOOKUPS)


def test_resolve_members_directly() -> None:
    j1, j2 = pu("x", "1"), pu("X", "2")
    group = dg("admin", "alice", "amb", "ghost", "Bob")
    found, protected, warnings = resolve_members(
        group, {"alice": (ALICE,), "amb": (j1, j2), "ghost": (), "Bob": (BOB,)}
    )
    assert found == {ALICE: "alice", BOB: "Bob"}
    assert protected == {j1: "amb", j2: "amb"}
    assert [w.code for w in warnings] == [
        WarningCode.AMBIGUOUS_MATCH,
        WarningCode.USER_NOT_FOUND,
        WarningCode.CASE_MISMATCH,
    ]


# --- vanished, deleted tenants --------------------------------------------------------------------


def test_vanished_groups_are_forgotten() -> None:
    p = plan(dt(dg("admin", roles=["r1"])), ot(og("admin", roles=["r1"]), vanished=["g-z", "g-a"]))
    assert p.forget == ("g-a", "g-z")
    assert p.changes == ()


def test_deleted_tenant_revokes_everything_then_deletes_every_owned_group() -> None:
    observed = ot(og("admin", ALICE, roles=["r1", "ext"]), og("user", BOB, CAROL, roles=["r2"]))
    owned = owned_of(*observed.groups, roles={"g-admin": ["r1"]})
    p = plan(dt(deleted=True), observed, owned, guard=STRICT, policy=KEEP)
    note = "tenant deleted"
    assert p.changes == (
        revoke("g-admin", "admin", "ext", note + "; granted outside the replicator, not carried over"),
        revoke("g-admin", "admin", "r1", note),
        revoke("g-user", "user", "r2", note),
        delete("g-admin", "admin", note + "; 1 members"),
        delete("g-user", "user", note + "; 2 members"),
    )
    assert p.blocked is None
    assert p.withheld == ()
    assert p.kept == ()


def test_skip_group_cleanup_revokes_but_keeps_groups_and_members() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]), og("user", BOB, roles=["r2"]))
    desired = replace(dt(deleted=True), keep_groups=True)
    p = plan(desired, observed, owned_of(*observed.groups), guard=STRICT, policy=KEEP)
    assert p.changes == (
        revoke("g-admin", "admin", "r1", "tenant deleted"),
        revoke("g-user", "user", "r2", "tenant deleted"),
    )


def test_a_tenant_removed_from_the_inventory_says_so() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]))
    desired = replace(dt(deleted=True), removed=True)
    p = plan(desired, observed, owned_of(*observed.groups), guard=STRICT)
    assert [c.note for c in p.changes] == [
        "tenant removed from the inventory",
        "tenant removed from the inventory; 1 members",
    ]


def test_deleted_tenant_is_not_blocked_even_when_the_source_is_empty() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]))
    p = plan(dt(deleted=True), observed, guard=Guard(limit=0, source_empty=True))
    assert p.blocked is None
    assert [c.action for c in p.changes] == [Action.REVOKE, Action.DELETE_GROUP]


# --- deletion guard -------------------------------------------------------------------------------


def test_guard_blocks_when_desired_members_are_empty_but_managed_members_exist() -> None:
    observed = ot(og("admin", ALICE, BOB, roles=["r1"]))
    desired = dt(dg("admin", roles=["r1"]), dg("user", roles=["r2"]))
    p = plan(desired, observed, guard=Guard(limit=100))
    assert p.blocked == (
        "DELETION_GUARD: the desired state of finance/ledger/aws.eu-central-1 has no members but "
        "2 managed memberships exist; nothing is removed"
    )
    assert p.changes == (create("g-user", "user"), grant("g-user", "user", "r2"))
    assert p.withheld == (remove("g-admin", "admin", ALICE), remove("g-admin", "admin", BOB))
    assert (p.adds, p.removes) == (2, 0)


def test_guard_blocks_more_lost_memberships_than_the_limit() -> None:
    observed = ot(og("admin", ALICE, BOB, CAROL, DAVE, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", "eve", roles=["r1"])), observed, guard=Guard(limit=2))
    assert p.blocked == (
        "DELETION_GUARD: 3 of 4 managed memberships would be removed, more than maxDeletions allows (2); "
        "nothing is removed"
    )
    assert p.changes == (add("g-admin", "admin", EVE),)
    assert p.withheld == (
        remove("g-admin", "admin", BOB),
        remove("g-admin", "admin", CAROL),
        remove("g-admin", "admin", DAVE),
    )


def test_guard_allows_exactly_the_limit() -> None:
    observed = ot(og("admin", ALICE, BOB, CAROL, DAVE, roles=["r1"]))
    p = plan(dt(dg("admin", "alice", "eve", roles=["r1"])), observed, guard=Guard(limit=3))
    assert p.blocked is None
    assert p.withheld == ()
    assert p.changes == (
        add("g-admin", "admin", EVE),
        remove("g-admin", "admin", BOB),
        remove("g-admin", "admin", CAROL),
        remove("g-admin", "admin", DAVE),
    )


def test_guard_counts_members_of_groups_that_are_deleted() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]), og("reader", BOB, CAROL, roles=["read"]))
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, guard=Guard(limit=1))
    assert p.blocked is not None
    assert "2 of 3 managed memberships" in p.blocked
    assert p.changes == ()
    assert [c.action for c in p.withheld] == [Action.REVOKE, Action.DELETE_GROUP]


def test_allow_deletions_lifts_the_guard() -> None:
    observed = ot(og("admin", ALICE, BOB, roles=["r1"]))
    p = plan(dt(dg("admin", roles=["r1"])), observed, guard=Guard(limit=0, allow_deletions=True))
    assert p.blocked is None
    assert p.changes == (remove("g-admin", "admin", ALICE), remove("g-admin", "admin", BOB))


def test_guard_allows_revokes_that_lose_no_membership() -> None:
    observed = ot(og("admin", ALICE, roles=["r1", "old"]))
    p = plan(dt(dg("admin", "alice", roles=["r1"])), observed, guard=STRICT)
    assert p.blocked is None
    assert p.changes == (revoke("g-admin", "admin", "old", "no longer mapped"),)


def test_source_empty_without_removals_is_not_blocked() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]))
    p = plan(
        dt(dg("admin", "alice", "bob", roles=["r1"])), observed, guard=Guard(limit=10, source_empty=True)
    )
    assert p.blocked is None
    assert p.changes == (add("g-admin", "admin", BOB),)


def test_source_empty_with_a_removal_is_blocked() -> None:
    observed = ot(og("admin", ALICE, BOB, roles=["r1"]))
    p = plan(
        dt(dg("admin", "alice", "carol", roles=["r1"])), observed, guard=Guard(limit=10, source_empty=True)
    )
    assert p.blocked == (
        "DELETION_GUARD: the inventory is empty (a failed or truncated source?); nothing is removed"
    )
    assert p.changes == (add("g-admin", "admin", CAROL),)
    assert p.withheld == (remove("g-admin", "admin", BOB),)


def test_source_empty_blocks_group_deletion() -> None:
    observed = ot(og("admin", roles=["r1"]), og("reader", roles=["read"]))
    p = plan(dt(dg("admin", roles=["r1"])), observed, guard=Guard(limit=10, source_empty=True))
    assert p.blocked is not None
    assert p.changes == ()
    assert [c.action for c in p.withheld] == [Action.REVOKE, Action.DELETE_GROUP]


def test_source_empty_with_allow_deletions_is_not_blocked() -> None:
    observed = ot(og("admin", ALICE, roles=["r1"]))
    p = plan(
        dt(dg("admin", roles=["r1"])), observed, guard=Guard(limit=0, allow_deletions=True, source_empty=True)
    )
    assert p.blocked is None
    assert p.changes == (remove("g-admin", "admin", ALICE),)


def test_rename_does_not_count_as_lost_memberships() -> None:
    old = og("admin", ALICE, BOB, CAROL, roles=["r1"], name="old-admin")
    p = plan(dt(dg("admin", "alice", "bob", "carol", roles=["r1"], name="new-admin")), ot(old), guard=STRICT)
    assert p.blocked is None
    assert [c.action for c in p.changes] == [
        Action.CREATE_GROUP,
        Action.ADD_MEMBER,
        Action.ADD_MEMBER,
        Action.ADD_MEMBER,
        Action.GRANT,
        Action.REVOKE,
        Action.DELETE_GROUP,
    ]


# --- maxDeletions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_deletions", "managed", "limit"),
    [
        ("25%", 10, 3),
        ("25%", 8, 2),
        ("25%", 9, 3),
        ("50%", 3, 2),
        ("100%", 7, 7),
        ("25%", 1, 1),
        ("25%", 0, 1),
        (" 10% ", 100, 10),
        ("12.5%", 8, 1),
        ("12.5%", 9, 2),
    ],
)
def test_deletion_limit_percentage_rounds_up(max_deletions: str, managed: int, limit: int) -> None:
    config = ReplicationConfig.model_validate({"maxDeletions": max_deletions})
    assert config.deletion_limit(managed) == limit


def test_deletion_limit_zero_percent_has_a_floor_of_one() -> None:
    config = ReplicationConfig.model_validate({"maxDeletions": "0%"})
    assert config.deletion_limit(10) == 1


def test_deletion_limit_percentage_is_exact_for_decimal_percentages() -> None:
    # 8.8% of 375 is exactly 33, 1.1% of 3000 is exactly 33: rounding up must not add one
    assert ReplicationConfig.model_validate({"maxDeletions": "8.8%"}).deletion_limit(375) == 33
    assert ReplicationConfig.model_validate({"maxDeletions": "1.1%"}).deletion_limit(3000) == 33


@pytest.mark.parametrize(("count", "managed"), [(0, 10), (5, 10), (50, 3)])
def test_deletion_limit_count_is_used_as_is(count: int, managed: int) -> None:
    config = ReplicationConfig.model_validate({"maxDeletions": count})
    assert config.deletion_limit(managed) == count


def test_deletion_limit_default_is_25_percent() -> None:
    assert ReplicationConfig().deletion_limit(10) == 3


@pytest.mark.parametrize("bad", ["101%", "-1%", "abc%", -1, "10", True, 1.5])
def test_max_deletions_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match=r"percentage|count"):
        ReplicationConfig.model_validate({"maxDeletions": bad})


# --- order_changes --------------------------------------------------------------------------------


def test_action_order_constant() -> None:
    assert ACTION_ORDER == (
        Action.CREATE_GROUP,
        Action.ENSURE_USER,
        Action.ADD_MEMBER,
        Action.GRANT,
        Action.REVOKE,
        Action.REMOVE_MEMBER,
        Action.DELETE_GROUP,
        Action.DELETE_USER,
    )
    assert [a.adds for a in ACTION_ORDER] == [True, True, True, True, False, False, False, False]


def test_order_changes_sorts_by_action_then_group_then_subject() -> None:
    changes = [
        delete("b", "b", "x"),
        remove("a", "a", BOB),
        revoke("a", "a", "r1", "x"),
        grant("b", "b", "r1"),
        grant("a", "a", "r2"),
        grant("a", "a", "r1"),
        add("a", "a", CAROL),
        add("a", "a", ALICE),
        Change(Action.ENSURE_USER, "a", "a", euid="zed"),
        create("b", "b"),
        create("a", "a"),
    ]
    assert order_changes(changes) == (
        create("a", "a"),
        create("b", "b"),
        Change(Action.ENSURE_USER, "a", "a", euid="zed"),
        add("a", "a", ALICE),
        add("a", "a", CAROL),
        grant("a", "a", "r1"),
        grant("a", "a", "r2"),
        grant("b", "b", "r1"),
        revoke("a", "a", "r1", "x"),
        remove("a", "a", BOB),
        delete("b", "b", "x"),
    )


def test_order_changes_is_stable_for_equal_keys() -> None:
    first = revoke("a", "a", "r1", "first")
    second = revoke("a", "a", "r1", "second")
    assert order_changes([second, first]) == (second, first)
    assert order_changes([first, second]) == (first, second)
    assert order_changes([]) == ()


# --- fingerprint ----------------------------------------------------------------------------------


def _fp_base() -> tuple[ObservedTenant, list[OwnedGroup]]:
    a = og("admin", ALICE, BOB, roles=["r1", "r2"])
    u = og("user", CAROL, roles=["r3"])
    observed = ot(a, u, vanished=["v1", "v2"], foreign={"f1": "x", "f2": "y"})
    return observed, owned_of(a, u)


def test_fingerprint_ignores_order() -> None:
    observed, owned = _fp_base()
    a, u = observed.groups
    a2 = ObservedGroup(a.id, a.name, a.alias, frozenset([BOB, ALICE]), frozenset(["r2", "r1"]))
    shuffled = ObservedTenant((u, a2), ("v2", "v1"), {"f2": "y", "f1": "x"})
    assert fingerprint(shuffled, list(reversed(owned))) == fingerprint(observed, owned)
    assert fingerprint(observed, owned).startswith("sha256:")


def _variants() -> dict[str, tuple[ObservedTenant, list[OwnedGroup]]]:
    observed, owned = _fp_base()
    a, u = observed.groups

    def with_admin(
        members: frozenset[PlatformUser] = a.members, roles: frozenset[str] = a.roles
    ) -> ObservedTenant:
        return ObservedTenant((og("admin", *members, roles=roles), u), observed.vanished, observed.foreign)

    return {
        "member added": (with_admin(members=a.members | {DAVE}), owned),
        "member removed": (with_admin(members=frozenset({ALICE})), owned),
        "member replaced": (with_admin(members=frozenset({ALICE, EVE})), owned),
        "role added": (with_admin(roles=a.roles | {"r9"}), owned),
        "role removed": (with_admin(roles=frozenset({"r1"})), owned),
        "group gone": (ObservedTenant((a,), observed.vanished, observed.foreign), owned),
        "group id": (
            ObservedTenant(
                (ObservedGroup("other", a.name, a.alias, a.members, a.roles), u),
                observed.vanished,
                observed.foreign,
            ),
            owned,
        ),
        "vanished": (ObservedTenant(observed.groups, ("v1",), observed.foreign), owned),
        "foreign": (ObservedTenant(observed.groups, observed.vanished, {"f1": "x", "f2": "z"}), owned),
        "owned roles": (observed, [OwnedGroup(o.alias, o.name, o.platform_id, frozenset()) for o in owned]),
        "owned record": (observed, owned[:1]),
    }


@pytest.mark.parametrize("variant", sorted(_variants()))
def test_fingerprint_changes_with_any_change(variant: str) -> None:
    observed, owned = _fp_base()
    changed_observed, changed_owned = _variants()[variant]
    assert fingerprint(changed_observed, changed_owned) != fingerprint(observed, owned)
