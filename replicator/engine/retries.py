"""One change applied with retries: exponential backoff, the platform's Retry-After honoured, a
wait too long for the run ends it instead of stalling it; and what a change the platform could
not apply yet (pending) or a user it could not ensure becomes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from platforms.contract import Change, Driver, PendingError, RetryableError, TenantRef
from replicator.core.model import ReplicationWarning, WarningCode
from replicator.logs import get_logger

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from replicator.core.plan import Plan

log = get_logger("replicator.engine")

MAX_RETRY_AFTER = 300.0
"""Seconds: a longer Retry-After fails the tenant for this run rather than holding it."""
PENDING_WAIT_IN_RUN = 10.0
"""Seconds: a platform that is catching up and asks for a longer wait is not waited for within the
run; the tenant is requeued at once."""


async def apply_with_retries(
    driver: Driver, change: Change, group_id: str | None, ref: TenantRef, *, attempts: int, retry_wait: float
) -> str | None:
    """One change, retried with exponential backoff while the platform says "try again"; a
    Retry-After the platform gave wins when it is longer, and one over MAX_RETRY_AFTER fails the
    tenant at once (the next run tries again) instead of stalling the run. A platform that has
    not caught up with our writes (:class:`PendingError`) is retried the same way, but asked to
    wait over PENDING_WAIT_IN_RUN it ends the run as pending at once (requeued, not failed)."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

    backoff = wait_exponential(multiplier=retry_wait, max=60)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = error.retry_after if isinstance(error, RetryableError) and error.retry_after else 0.0
        return max(backoff(state), asked)

    def retryable(error: BaseException) -> bool:
        if not isinstance(error, RetryableError):
            return False
        limit = PENDING_WAIT_IN_RUN if isinstance(error, PendingError) else MAX_RETRY_AFTER
        return (error.retry_after or 0) <= limit

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("retrying change", action=change.action.value, group=change.group, error=str(error))

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(attempts),
        wait=wait,
        before_sleep=note,
        reraise=True,
    ):
        with attempt:
            return await driver.apply(ref, change, group_id)
    raise AssertionError("unreachable: tenacity re-raises the last error")


class PendingChange(PendingError):
    """A change the platform could not apply yet because it has not caught up with an earlier
    write of this run: the change's description and the object it waited for."""

    def __init__(self, message: str, subject: str, retry_after: float | None) -> None:
        super().__init__(message, retry_after)
        self.subject = subject


def unknown_user(plan: Plan, platform_euid: str, why: str) -> ReplicationWarning:
    """USER_NOT_FOUND for a user an ENSURE_USER change could not make, named as the plan names
    users (the meshUser behind the transformed euid)."""
    member = next(
        (m for g in plan.tenant.groups for m in g.members if m.platform_euid == platform_euid), None
    )
    user, euid = (member.user, member.euid) if member is not None else (platform_euid, platform_euid)
    return ReplicationWarning(
        WarningCode.USER_NOT_FOUND,
        user,
        f"user {user}: {platform_euid!r} (euid {euid!r}) cannot be ensured on the platform: {why}",
        user=user,
        euid=euid,
    )
