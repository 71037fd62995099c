"""Deprovisioning the users the replicator created (OpenStack federated users, Entra ID B2B
guests): which of them no binding of any tenant of their platform needs, since when, and which are
past their grace period and go. A pure function over plain data.

Only users the state store records as created by the replicator are ever considered; a user it
found on the platform is never among them. An empty inventory deletes nobody, and more deletions
in one run than ``maxDeletions`` allows (of the platform's created users) wait for an operator."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class CreatedUser:
    """A platform user the replicator created, as the store records it."""

    user_id: str
    euid: str
    """The transformed euid it was created for (what bindings must name to need it)."""
    created_at: datetime
    unneeded_since: datetime | None = None
    """Since when no binding of any tenant of the platform needs it (None: needed)."""


@dataclass(frozen=True)
class UserPlan:
    """What to do with one platform's created users in this run."""

    platform: str
    delete: tuple[CreatedUser, ...] = ()
    """Unneeded for longer than the grace period: deleted by this run (unless ``blocked``)."""
    waiting: tuple[tuple[CreatedUser, datetime], ...] = ()
    """Unneeded, within the grace period: each with when it is deleted (if still unneeded)."""
    unneeded: tuple[CreatedUser, ...] = ()
    """Unneeded as of this run: the store records since when."""
    needed_again: tuple[CreatedUser, ...] = ()
    """Were unneeded, are needed again: the store forgets since when."""
    blocked: str | None = None
    """Why the deletions wait for an operator (DELETION_GUARD), or None."""

    @property
    def changes(self) -> int:
        return 0 if self.blocked else len(self.delete)


def plan_users(
    platform: str,
    created: Sequence[CreatedUser],
    needed: Collection[str],
    now: datetime,
    grace: timedelta,
    limit: int,
    *,
    allow_deletions: bool = False,
    source_empty: bool = False,
) -> UserPlan:
    """Compare the created users with the transformed euids some binding ``needed`` on the
    platform. ``limit``: deletions one run may make without ``allow_deletions``."""
    delete: list[CreatedUser] = []
    waiting: list[tuple[CreatedUser, datetime]] = []
    unneeded: list[CreatedUser] = []
    needed_again: list[CreatedUser] = []
    for user in sorted(created, key=lambda u: u.euid):
        if user.euid in needed:
            if user.unneeded_since is not None:
                needed_again.append(user)
            continue
        since = user.unneeded_since
        if since is None:
            unneeded.append(user)
            since = now
        if now - since >= grace:
            delete.append(user)
        else:
            waiting.append((user, since + grace))
    blocked = None
    if delete and not allow_deletions:
        if source_empty:
            blocked = "DELETION_GUARD: the inventory is empty; no user is deleted"
        elif len(delete) > limit:
            blocked = (
                f"DELETION_GUARD: {len(delete)} of {len(created)} users the replicator created would "
                f"be deleted, more than maxDeletions allows ({limit}); nobody is deleted"
            )
    return UserPlan(
        platform, tuple(delete), tuple(waiting), tuple(unneeded), tuple(needed_again), blocked
    )
