"""The pure parts of plan files and snapshots: digests, the diffs that name what changed, the
observed-state round trip."""

from __future__ import annotations

from platforms.contract import ObservedGroup, ObservedTenant, OwnedGroup, PlatformUser
from replicator.core.plan import fingerprint
from replicator.core.planfile import (
    diff_changes,
    diff_inputs,
    diff_observed,
    observed_doc,
    observed_from_doc,
    summarise,
)

ALICE, BOB = PlatformUser("u1", "alice"), PlatformUser("u2", "bob")


def tenant(members: frozenset[PlatformUser], roles: frozenset[str] = frozenset({"r1"})) -> ObservedTenant:
    return ObservedTenant(
        groups=(ObservedGroup("g1", "team-admin", "admin", members, roles),),
        vanished=("team-old",),
        foreign={"team-user": "x9"},
    )


OWNED = (OwnedGroup("admin", "team-admin", "g1", frozenset({"r1"})), OwnedGroup("old", "team-old", None))


def test_observed_doc_round_trips_and_keeps_the_fingerprint() -> None:
    observed = tenant(frozenset({ALICE, BOB}))
    back, owned = observed_from_doc(observed_doc(observed, OWNED))
    assert back.groups == observed.groups
    assert back.vanished == observed.vanished
    assert dict(back.foreign) == dict(observed.foreign)
    assert owned == OWNED
    assert fingerprint(back, owned) == fingerprint(observed, OWNED)


def test_diff_observed_names_members_roles_and_groups() -> None:
    before = observed_doc(tenant(frozenset({ALICE})), OWNED)
    after = observed_doc(tenant(frozenset({BOB}), frozenset({"r1", "r2"})), OWNED)
    assert diff_observed(before, after) == [
        "group team-admin: member bob added",
        "group team-admin: member alice removed",
        "group team-admin: role r2 added",
    ]
    assert diff_observed(before, before) == []
    gone = observed_doc(ObservedTenant(vanished=("team-admin", "team-old")), OWNED)
    assert diff_observed(before, gone) == [
        "group team-admin: gone",
        "group team-admin: deleted outside the replicator",
        "group name team-user: no longer taken by a foreign group",
    ]


def test_diff_observed_reports_store_only_changes() -> None:
    observed = tenant(frozenset({ALICE}))
    a = observed_doc(observed, OWNED)
    b = observed_doc(observed, OWNED[:1])
    assert diff_observed(a, b) == [
        "the state store's records of owned groups changed (another run applied changes)"
    ]


def test_diff_inputs_and_changes() -> None:
    assert diff_inputs({"a": "1", "b": "2"}, {"b": "3", "c": "4"}) == [
        "a: removed",
        "b: changed",
        "c: added",
    ]
    old = [{"action": "add_member", "group": "g", "platformUser": "alice"}]
    new = [{"action": "add_member", "group": "g", "platformUser": "bob"}]
    assert diff_changes(old, new) == [
        "no longer planned: add_member g alice",
        "newly planned: add_member g bob",
    ]
    assert summarise([str(i) for i in range(12)], limit=10)[-1] == "... and 2 more"
    assert summarise(["x"]) == ["x"]
