"""The engine's deprovisioning step (``deprovisionCreatedUsers``), after a run over every tenant of
a platform: which users the replicator created no binding of any tenant of the platform needs,
recorded since when; those past the grace period deleted, one audited change each.

It runs only when the run chose every tenant (``reconcile --all`` or ``--platform``, the
daemon's sweep), never while a tenant removed from the inventory is left on the platform (its
groups may still hold such users), and never on an empty inventory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from platforms.contract import Action, Change, Driver, PlatformError, PlatformUser, TenantRef
from replicator.core.config import PlatformConfig
from replicator.core.deprovision import CreatedUser, plan_users
from replicator.engine.leases import Held, TenantLeases
from replicator.engine.results import UserResult
from replicator.inputs.validate import Validated
from replicator.logs import get_logger
from replicator.threads import blocking
from state import Store, StoreError

log = get_logger("replicator.engine")
Audit = Callable[[int | None, str, str, Change, str, "str | None"], Awaitable[None]]


def delete_change(user: CreatedUser, why: str) -> Change:
    """The change that deletes one created user (it names no group: it is not of a tenant)."""
    return Change(Action.DELETE_USER, "", "", user=PlatformUser(user.user_id, user.euid), note=why)


async def deprovision(
    store: Store,
    driver: Driver,
    v: Validated,
    platform: PlatformConfig,
    needed: set[str],
    *,
    apply: bool,
    allow_deletions: bool,
    now: datetime,
    audit: Audit,
) -> UserResult:
    """Plan (and with ``apply``, carry out) the platform's created users against ``needed``, the
    transformed euids some binding of some tenant of the platform names."""
    result = UserResult(platform.identifier)
    option = platform.deprovision_created_users
    try:
        records = await blocking(store.created_users, platform.identifier)
        created = [CreatedUser(r.user_id, r.euid, r.created_at, r.unneeded_since) for r in records]
        plan = result.plan = plan_users(
            platform.identifier,
            created,
            needed,
            now,
            timedelta(seconds=option.grace_period),
            v.config.replication.deletion_limit(len(created)),
            allow_deletions=allow_deletions,
            source_empty=v.inventory.empty,
        )
        if not apply:
            return result
        p = platform.identifier
        await blocking(store.mark_unneeded, p, [u.user_id for u in plan.unneeded], now)
        await blocking(store.mark_unneeded, p, [u.user_id for u in plan.needed_again], None)
        if plan.blocked:
            log.error("users not deprovisioned", platform=p, error=plan.blocked)
            return result
        for user in plan.delete:
            since = user.unneeded_since or now
            change = delete_change(user, f"created by the replicator; unneeded since {since:%Y-%m-%d %H:%M}")
            await audit(None, "", p, change, "started", None)
            try:
                await driver.apply(TenantRef("", p, ""), change, None)
            except PlatformError as e:
                await audit(None, "", p, change, "failed", str(e))
                raise
            await blocking(store.forget_created_user, p, user.user_id)
            await blocking(store.forget_lookups, p, [user.euid])
            await audit(None, "", p, change, "applied", None)
            result.deleted += 1
    except (PlatformError, StoreError) as e:
        result.error = f"deprovisioning users: {e}"
        log.error("users not deprovisioned", platform=platform.identifier, error=result.error)
    return result


async def under_lease(
    leases: TenantLeases | None, platform: str, run: Callable[[], Awaitable[UserResult]]
) -> UserResult | None:
    """``run`` holding the platform's users lease (``users/<platform>``), so that one run at a
    time deprovisions (another replica's sweep, a ``reconcile --all``); None when another holds
    it. Without ``leases`` (a plan), just ``run``."""
    if leases is None:
        return await run()
    async with leases.hold(f"users/{platform}") as lease:
        if isinstance(lease, Held):
            log.info("users left to another run", platform=platform, holder=lease.holder)
            return None
        return await run()
