"""The deletion guard counts (meshProject role, user) access taken away for good: a group renamed
through its role's platformGroupAlias moves its members, it does not remove them."""

from __future__ import annotations

from dataclasses import replace

from platforms.contract import Action, OwnedGroup
from replicator.core.model import DesiredGroup
from replicator.core.plan import Guard
from tests.unit.test_plan import ALICE, BOB, CAROL, STRICT, dg, dm, dt, og, ot, owned_of, plan


def renamed(alias: str, *euids: str, roles: tuple[str, ...] = ("r1",), role: str = "admin") -> DesiredGroup:
    """The desired group of meshProject role ``role`` under a new alias."""
    return DesiredGroup(alias, f"g-{alias}", frozenset(roles), tuple(dm(e) for e in euids), role)


def recorded(*owned: OwnedGroup, role: str = "admin") -> list[OwnedGroup]:
    return [replace(o, project_role=role) for o in owned]


OLD = og("admin", ALICE, BOB, CAROL, roles=["r1"])


def test_a_renamed_alias_of_a_recorded_role_loses_nobody() -> None:
    desired = dt(renamed("administrators", "alice", "bob", "carol"))
    p = plan(desired, ot(OLD), recorded(*owned_of(OLD)), guard=STRICT)
    assert p.blocked is None
    assert [c.action for c in p.changes].count(Action.ADD_MEMBER) == 3
    (delete,) = [c for c in p.changes if c.action is Action.DELETE_GROUP]
    assert delete.group == "g-admin"
    assert delete.note.startswith(
        "renamed: replaced by g-administrators (the role admin has a new platformGroupAlias)"
    )


def test_a_group_recorded_before_roles_were_is_matched_by_the_platform_roles_we_granted() -> None:
    p = plan(dt(renamed("administrators", "alice", "bob", "carol")), ot(OLD), owned_of(OLD), guard=STRICT)
    assert p.blocked is None


def test_without_a_recorded_role_or_the_same_grants_a_rename_counts_as_removal() -> None:
    desired = dt(renamed("administrators", "alice", "bob", "carol", roles=("r2",)))
    p = plan(desired, ot(OLD), owned_of(OLD), guard=Guard(limit=2))
    assert p.blocked is not None
    assert "3 of 3 managed memberships would be removed" in p.blocked


def test_two_desired_groups_with_the_same_grants_do_not_guess() -> None:
    desired = dt(renamed("a", "alice", "bob", "carol"), renamed("b", "alice", role="user"))
    p = plan(desired, ot(OLD), owned_of(OLD), guard=Guard(limit=2))
    assert p.blocked is not None


def test_a_member_moved_to_another_role_loses_the_first_one() -> None:
    observed = ot(og("admin", ALICE, BOB, roles=["r1"]), og("reader", CAROL, roles=["read"]))
    desired = dt(dg("admin", "alice", roles=["r1"]), dg("reader", "carol", "bob", roles=["read"]))
    owned = [replace(o, project_role=o.alias) for o in owned_of(*observed.groups)]
    p = plan(desired, observed, owned, guard=STRICT)
    assert p.blocked is not None
    assert "1 of 3 managed memberships would be removed" in p.blocked
