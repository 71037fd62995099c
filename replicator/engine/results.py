"""What one tenant run ends with: a :class:`TenantResult` (the plan, the observation, what was
applied) and its :class:`Outcome`, the one value callers decide on, as controller-runtime's
``Result`` is for a reconciler:

* :class:`Converged`: the platform is as desired, nothing was or is to be changed;
* :class:`Changed`: changes were applied (or, for a plan, are pending);
* :class:`Failed`: the run stopped, for a typed reason (:class:`FailureKind`); nothing is removed
  because of a failed run;
* :class:`Requeue`: the platform is still catching up with our own writes: come back after a
  delay (a transient condition, warned about, not a failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from platforms.contract import ObservedTenant, OwnedGroup
from replicator.core.deprovision import UserPlan
from replicator.core.model import ReplicationWarning, WarningCode
from replicator.core.plan import Plan


class FailureKind(StrEnum):
    GUARD = "guard"
    """The deletion guard withheld removals: the tenant waits for its input or an operator."""
    STALE = "stale"
    """A saved plan no longer matches the inputs or the platform."""
    LEASE = "lease"
    """The run lost the tenant's lease part-way (another run took it): it stopped before its next
    change."""
    HELD = "held"
    """Another run (another replica, or a daemon and a one-shot run) held the tenant's lease: this
    run did nothing with the tenant."""
    PLATFORM = "platform"
    """The platform refused (permissions, a bad id, a foreign object, validation): repeating the
    same request will not help; an operator or an input change will."""
    UNAVAILABLE = "unavailable"
    """The platform stayed throttled, unavailable or unreachable through the run's retries: a
    transient condition the next run (the daemon's backoff) tries again."""
    LOOKUP = "lookup"
    """The user lookup failed."""
    STORE = "store"
    """The state store failed."""
    INTERNAL = "internal"
    """A bug: an exception nobody expected."""


@dataclass(frozen=True)
class Converged:
    pass


@dataclass(frozen=True)
class Changed:
    applied: int
    """Changes applied in this run."""
    pending: int = 0
    """Changes planned and not applied (a plan, or a run stopped part-way)."""


@dataclass(frozen=True)
class Failed:
    kind: FailureKind
    error: str


@dataclass(frozen=True)
class Requeue:
    after: float
    """Seconds before the tenant is run again."""
    reason: str


Outcome = Converged | Changed | Failed | Requeue


class UnknownTenantError(ValueError):
    """A tenant asked for on the command line is not in the inventory."""


class LeaseLostError(Exception):
    """This replica no longer holds the tenant's lease: another may be working on it."""


@dataclass
class TenantResult:
    key: str
    platform: str
    plan: Plan | None = None
    observed: ObservedTenant | None = None
    owned: tuple[OwnedGroup, ...] = ()
    """The state store's records the plan was computed with."""
    applied: int = 0
    error: str | None = None
    error_kind: FailureKind | None = None
    """Why the run failed (None: it did not)."""
    pending: str | None = None
    """The platform had not caught up with this run's own writes when the run stopped (not a
    failure): what it did not know yet. The tenant is to run again after ``requeue_after``."""
    pending_subject: str = ""
    """The object the platform did not know yet (a group name, a user)."""
    requeue_after: float = 0.0
    found_while_applying: list[ReplicationWarning] = field(default_factory=list)
    """Warnings the apply learnt of (a user the platform could not ensure)."""
    run_id: int | None = None
    """The state store's record of this run (runs that apply)."""
    lease_token: int | None = None
    """The fencing token of the tenant lease the run held (runs that apply)."""
    duration: float = 0.0
    """Seconds the tenant's run took (lease, observation, plan, apply)."""
    calls: int | None = None
    """Requests sent to the platform for this tenant: known when the engine ran it alone (the
    lookup included); None in a run of several tenants, whose reads are shared (``RunReport.calls``)."""

    @property
    def ok(self) -> bool:
        """Not failed (a pending tenant is not a failure)."""
        return self.error is None

    @property
    def requeued(self) -> bool:
        """Ended pending on the platform (not failed): its outcome is a :class:`Requeue`."""
        return self.error is None and self.pending is not None

    @property
    def warnings(self) -> tuple[ReplicationWarning, ...]:
        """The plan's warnings, and PLATFORM_PENDING while the platform catches up."""
        found = (*(self.plan.warnings if self.plan is not None else ()), *self.found_while_applying)
        if self.pending is None:
            return found
        pending = ReplicationWarning(WarningCode.PLATFORM_PENDING, self.pending_subject, self.pending)
        return (*found, pending)

    @property
    def outcome(self) -> Outcome:
        """The run as one typed value: what a caller decides on (retry, hold, requeue, done)."""
        if self.error is not None:
            return Failed(self.error_kind or FailureKind.INTERNAL, self.error)
        if self.pending is not None:
            return Requeue(self.requeue_after, self.pending)
        pending = len(self.plan.changes) if self.plan is not None else 0
        if self.applied or pending:
            return Changed(self.applied, pending - self.applied)
        return Converged()


@dataclass
class UserResult:
    """The deprovisioning step of one platform's run (``deprovisionCreatedUsers``)."""

    platform: str
    plan: UserPlan | None = None
    deleted: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.plan is None or self.plan.blocked is None)


@dataclass
class RunReport:
    results: list[TenantResult] = field(default_factory=list)
    users: list[UserResult] = field(default_factory=list)
    """Per platform whose created users the run looked at (whole-platform runs only)."""
    held: dict[str, str] = field(default_factory=dict)
    """Tenants removed from the inventory that were left alone, with the reason (see select)."""
    calls: dict[str, int] = field(default_factory=dict)
    """Requests sent to each platform by the run (as its driver counts them)."""

    @property
    def failed(self) -> list[TenantResult]:
        return [r for r in self.results if not r.ok]

    @property
    def guarded(self) -> list[str]:
        """Tenants ``held`` by the deletion guard (the inventory read as empty while the store
        records tenants): a failure, as the guard's refusals are, not a policy that leaves them."""
        return sorted(k for k, why in self.held.items() if why.startswith("DELETION_GUARD"))

    @property
    def requeued(self) -> list[TenantResult]:
        """Tenants the platform had not caught up with (to run again after a delay)."""
        return [r for r in self.results if r.requeued]

    @property
    def warnings(self) -> int:
        return sum(len(r.warnings) for r in self.results)

    @property
    def pending(self) -> int:
        users = sum(len(u.plan.delete) for u in self.users if u.plan)
        return users + sum(len(r.plan.changes) + len(r.plan.withheld) for r in self.results if r.plan)

    @property
    def users_failed(self) -> list[UserResult]:
        """Platforms whose users step failed or the deletion guard held."""
        return [u for u in self.users if not u.ok]
