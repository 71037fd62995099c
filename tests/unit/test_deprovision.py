"""plan_users: which created users no binding needs, since when, and which go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from replicator.core.deprovision import CreatedUser, plan_users

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def user(euid: str, unneeded: timedelta | None = None) -> CreatedUser:
    return CreatedUser(f"id-{euid}", euid, NOW - 30 * DAY, None if unneeded is None else NOW - unneeded)


def test_needed_users_stay_and_lose_their_mark() -> None:
    p = plan_users("p", [user("a"), user("b", unneeded=DAY)], {"a", "b"}, NOW, 7 * DAY, limit=10)
    assert (p.delete, p.waiting, p.unneeded) == ((), (), ())
    assert [u.euid for u in p.needed_again] == ["b"]


def test_an_unneeded_user_waits_out_the_grace_period_then_goes() -> None:
    fresh = plan_users("p", [user("a")], set(), NOW, 7 * DAY, limit=10)
    assert [u.euid for u in fresh.unneeded] == ["a"]
    assert [(u.euid, at) for u, at in fresh.waiting] == [("a", NOW + 7 * DAY)]
    assert fresh.delete == ()
    later = plan_users("p", [user("a", unneeded=3 * DAY)], set(), NOW, 7 * DAY, limit=10)
    assert [(u.euid, at) for u, at in later.waiting] == [("a", NOW + 4 * DAY)]
    due = plan_users("p", [user("a", unneeded=7 * DAY)], set(), NOW, 7 * DAY, limit=10)
    assert [u.euid for u in due.delete] == ["a"]
    assert (due.blocked, due.changes) == (None, 1)


def test_the_guard_holds_more_deletions_than_the_limit_and_an_empty_inventory() -> None:
    users = [user(e, unneeded=10 * DAY) for e in ("a", "b", "c")]
    p = plan_users("p", users, set(), NOW, DAY, limit=2)
    assert p.blocked == (
        "DELETION_GUARD: 3 of 3 users the replicator created would be deleted, more than maxDeletions "
        "allows (2); nobody is deleted"
    )
    assert p.changes == 0
    assert plan_users("p", users, set(), NOW, DAY, limit=2, allow_deletions=True).blocked is None
    empty = plan_users("p", users, set(), NOW, DAY, limit=10, source_empty=True)
    assert empty.blocked == "DELETION_GUARD: the inventory is empty; no user is deleted"
