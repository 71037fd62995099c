"""The engine: one reconcile of a set of tenants. compile -> lookup -> observe -> plan -> apply ->
record. One tenant's failure never stops another's."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime

from platforms.contract import (
    Action,
    Change,
    Driver,
    ObservedTenant,
    PendingError,
    PlatformError,
    PlatformUser,
    RetryableError,
    TenantRef,
    UnknownUserError,
)
from platforms.registry import driver_class
from replicator.core.compile import compile_all
from replicator.core.config import KeepMatching, PlatformConfig
from replicator.core.model import DesiredTenant
from replicator.core.plan import GrantPolicy, Guard, Plan, plan_tenant
from replicator.engine.deprovision import deprovision, under_lease
from replicator.engine.leases import Held, TenantLeases
from replicator.engine.lookups import lookup
from replicator.engine.records import adopt, begin_run, end_tenant, group_names, owned_groups, record
from replicator.engine.results import FailureKind, LeaseLostError, RunReport, TenantResult, UnknownTenantError
from replicator.engine.retries import PendingChange, apply_with_retries, unknown_user
from replicator.inputs.validate import Validated
from replicator.logs import get_logger
from replicator.memory import bulk
from replicator.threads import blocking
from state import Store, StoreError

log = get_logger("replicator.engine")
audit_log = get_logger("replicator.audit")

DriverMaker = Callable[[PlatformConfig], Driver]
Fence = Callable[[TenantRef], Awaitable[bool]]
"""Asked before every change: True while this run may still change the tenant."""
Gate = Callable[[str, str], AbstractAsyncContextManager[object]]
"""The platform's concurrency limit, entered around each tenant of that platform (platform id,
tenant key; the daemon's, shared by its workers); without one, each run limits itself to
``schedule.concurrency``."""
PlanCheck = Callable[["TenantResult"], str | None]
"""Called with a computed plan before anything is applied: a reason to refuse the tenant, or None."""
PENDING_REQUEUE = 30.0
"""Seconds before a tenant the platform had not caught up with runs again, when the platform did
not say how long to wait."""


def default_driver(platform: PlatformConfig) -> Driver:
    cls = driver_class(platform.type)
    if cls is None:  # validation refuses this earlier
        raise PlatformError(f"no driver for platform type {platform.type!r}")
    return cls(platform.identifier, platform.options)


def grant_policy(platform: PlatformConfig, default: str) -> GrantPolicy:
    eg = platform.external_grants
    if isinstance(eg, KeepMatching):
        return GrantPolicy("keepMatching", eg.keep_matching)
    return GrantPolicy(eg or default)


class Engine:
    """Runs reconciles over validated input, a store and one driver per platform."""

    def __init__(
        self,
        validated: Validated,
        store: Store,
        *,
        allow_deletions: bool = False,
        make_driver: DriverMaker = default_driver,
        change_attempts: int = 3,
        retry_wait: float = 1.0,
        check: PlanCheck | None = None,
        leases: TenantLeases | None = None,
        gate: Gate | None = None,
        skip: Callable[[str], bool] | None = None,
        pending_requeue: float = PENDING_REQUEUE,
    ) -> None:
        self.v = validated
        self.pending_requeue = pending_requeue
        self.check = check
        self.leases = leases
        """Taken around each tenant a run applies to (its fence before each change)."""
        self.gate = gate
        self.skip = skip
        """Asked as each tenant's turn comes: True leaves it out of this run (no result)."""
        self.store = store
        self.allow_deletions = allow_deletions
        self.make_driver = make_driver
        self.change_attempts = change_attempts
        self.retry_wait = retry_wait
        self.whole_platforms: set[str] = set()
        self.needed: defaultdict[str, set[str]] = defaultdict(set)
        self.held_removed: dict[str, str] = {}
        """After :meth:`select`: tenants the store knows and the inventory no longer has that are
        left as they are, with the reason."""

    def select(
        self, now: datetime, tenants: Sequence[str] = (), platform: str | None = None
    ) -> list[DesiredTenant]:
        with bulk():  # a large inventory compiles without the collector walking it again and again
            desired = compile_all(self.v.config, self.v.inventory, self.v.capabilities, now)
        removed, held = self.removed_tenants(desired)
        unknown = [t for t in tenants if t not in desired and t not in removed and t not in held]
        if unknown:
            raise UnknownTenantError(
                "unknown tenant "
                + ", ".join(repr(t) for t in unknown)
                + " (write WORKSPACE/PROJECT/PLATFORM)"
            )
        chosen = [d for k, d in {**desired, **removed}.items() if (not tenants or k in tenants)]
        self.held_removed = {
            k: why
            for k, (p, why) in held.items()
            if (not tenants or k in tenants) and (platform is None or p == platform)
        }
        # Whose created users this run may deprovision: every tenant of the platform chosen, none
        # of them left on it while removed from the inventory; and which euids its bindings need.
        left = {p for p, _ in held.values()}
        self.whole_platforms = set() if tenants else {p for p in self.v.capabilities if p not in left}
        self.needed = defaultdict(set)
        for d in desired.values():
            self.needed[d.ref.platform].update(m.platform_euid for g in d.groups for m in g.members)
        if platform is not None:
            chosen = [d for d in chosen if d.ref.platform == platform]
        return chosen

    def removed_tenants(
        self, desired: Mapping[str, DesiredTenant]
    ) -> tuple[dict[str, DesiredTenant], dict[str, tuple[str, str]]]:
        """Tenants the state store knows (and has not finished deleting) that the inventory no
        longer has: (key -> the deletion to run, key -> (platform, why it is left alone)). They are
        deleted only with ``--allow-deletions`` or the platform's ``deleteRemovedTenants``, and
        never while the inventory as a whole is empty (a failed source is not an instruction)."""
        to_delete: dict[str, DesiredTenant] = {}
        held: dict[str, tuple[str, str]] = {}
        for rec in self.store.known_tenants():
            if rec.key in desired or rec.key in self.v.inventory.tenants or rec.status == "Deleted":
                continue
            platform = self.v.config.platform(rec.platform)
            if platform is None or rec.platform not in self.v.capabilities:
                held[rec.key] = (rec.platform, f"its platform {rec.platform!r} is no longer configured")
            elif self.v.inventory.empty:
                why = "the inventory is empty; nothing is deleted (a tenant to go is marked deleted: true)"
                held[rec.key] = (rec.platform, f"DELETION_GUARD: {why}")
            elif not rec.local_id:
                held[rec.key] = (rec.platform, "its platform id is unknown (no run of it ever finished)")
            elif not (self.allow_deletions or platform.delete_removed_tenants):
                held[rec.key] = (
                    rec.platform,
                    "in the state store but no longer in the inventory: left as it is "
                    "(deleteRemovedTenants: true or --allow-deletions deletes it)",
                )
            else:
                to_delete[rec.key] = DesiredTenant(
                    ref=TenantRef(rec.key, rec.platform, rec.local_id),
                    landing_zone="(removed from the inventory)",
                    groups=(),
                    deleted=True,
                    removed=True,
                    keep_groups=platform.skip_group_cleanup,
                )
        return to_delete, held

    async def run(
        self,
        tenants: Sequence[DesiredTenant],
        *,
        apply: bool,
        now: datetime,
        on_done: Callable[[TenantResult], None] | None = None,
    ) -> RunReport:
        by_platform: dict[str, list[DesiredTenant]] = defaultdict(list)
        for d in tenants:
            by_platform[d.ref.platform].append(d)
        report = RunReport()
        jobs = [
            self._run_platform(p, ds, apply, now, report, on_done) for p, ds in sorted(by_platform.items())
        ]
        await asyncio.gather(*jobs)
        report.results.sort(key=lambda r: r.key)
        return report

    async def _run_platform(
        self,
        platform_id: str,
        tenants: list[DesiredTenant],
        apply: bool,
        now: datetime,
        report: RunReport,
        on_done: Callable[[TenantResult], None] | None,
    ) -> None:
        platform = self.v.config.platform(platform_id)
        assert platform is not None
        try:
            driver = self.make_driver(platform)
        except PlatformError as e:
            for d in tenants:
                result = TenantResult(d.ref.key, platform_id, error=str(e), error_kind=FailureKind.PLATFORM)
                report.results.append(result)
                if on_done:
                    on_done(result)
            log.error("cannot start the driver", platform=platform_id, error=str(e))
            return
        try:
            try:
                lookups = await lookup(self.store, driver, self.v, platform_id, tenants, now)
            except (PlatformError, StoreError) as e:
                for d in tenants:
                    result = TenantResult(
                        d.ref.key,
                        platform_id,
                        error=f"user lookup failed: {e}",
                        error_kind=FailureKind.LOOKUP,
                    )
                    log.error("tenant failed", tenant=d.ref.key, platform=platform_id, error=result.error)
                    report.results.append(result)
                    if on_done:
                        on_done(result)
                return
            driver.remember_users(u for users in lookups.values() for u in users)
            names = await blocking(group_names, self.store, tenants)
            try:
                await driver.prepare(names)
            except PlatformError as e:  # a hint only: observe reads group by group instead
                log.warning("driver preparation failed", platform=platform_id, error=str(e))
            caps = self.v.capabilities[platform_id]
            policy = grant_policy(platform, caps.external_grants_default)
            own = asyncio.Semaphore(self.v.config.schedule.concurrency_for(platform_id))

            async def one(d: DesiredTenant) -> None:
                async with self.gate(platform_id, d.ref.key) if self.gate is not None else own:
                    if self.skip is not None and self.skip(d.ref.key):
                        return  # superseded before it started (the caller runs it afresh)
                    result = await self._leased(driver, d, lookups, policy, apply, now)
                calls = getattr(driver, "api_calls", None)
                if len(tenants) == 1 and calls is not None:
                    result.calls = sum(calls.values())
                report.results.append(result)
                if on_done:
                    on_done(result)

            await asyncio.gather(*(one(d) for d in tenants))
            clean = all(r.ok and not r.requeued for r in report.results if r.platform == platform_id)
            if platform.deprovision_created_users.enabled and platform_id in self.whole_platforms and clean:
                needed, allowed = self.needed[platform_id], self.allow_deletions
                run = functools.partial(
                    deprovision, self.store, driver, self.v, platform, needed,
                    apply=apply, now=now, allow_deletions=allowed, audit=self._audit,
                )
                users = await under_lease(self.leases if apply else None, platform_id, run)
                report.users.extend([users] if users is not None else [])
        finally:
            calls = getattr(driver, "api_calls", None)
            if calls is not None:
                report.calls[platform_id] = report.calls.get(platform_id, 0) + sum(calls.values())
            await driver.close()

    async def _leased(
        self,
        driver: Driver,
        desired: DesiredTenant,
        lookups: Mapping[str, tuple[PlatformUser, ...]],
        policy: GrantPolicy,
        apply: bool,
        now: datetime,
    ) -> TenantResult:
        """The tenant's run under its lease when it applies (a plan reads only: no lease)."""
        began = time.monotonic()
        leases = self.leases
        if not apply or leases is None:
            result = await self._tenant(driver, desired, lookups, policy, apply, now, None)
        else:
            async with leases.hold(desired.ref.key) as lease:
                if isinstance(lease, Held):
                    log.info("tenant held elsewhere", tenant=lease.key, holder=lease.holder)
                    error, kind = lease.message, FailureKind.HELD
                    return TenantResult(lease.key, desired.ref.platform, error=error, error_kind=kind)
                fence = functools.partial(leases.fence, lease)
                result = await self._tenant(driver, desired, lookups, policy, apply, now, fence)
                result.lease_token = lease.token
        result.duration = time.monotonic() - began
        return result

    async def _tenant(
        self,
        driver: Driver,
        desired: DesiredTenant,
        lookups: Mapping[str, tuple[PlatformUser, ...]],
        policy: GrantPolicy,
        apply: bool,
        now: datetime,
        fence: Fence | None,
    ) -> TenantResult:
        ref = desired.ref
        result = TenantResult(ref.key, ref.platform)
        run_id: int | None = None
        try:
            if apply:
                run_id = result.run_id = await blocking(begin_run, self.store, ref)
            owned = await blocking(owned_groups, self.store, ref)
            observed = await driver.observe(ref, owned, {g.alias: g.name for g in desired.groups})
            result.observed, result.owned = observed, tuple(owned)
            guard = Guard(
                limit=self.v.config.replication.deletion_limit(sum(len(g.members) for g in observed.groups)),
                allow_deletions=self.allow_deletions,
                source_empty=self.v.inventory.empty,
            )
            plan = await blocking(
                plan_tenant,
                desired,
                lookups,
                observed,
                owned,
                policy,
                guard,
                ensure_missing=driver.ensures_users,
            )
            result.plan = plan
            if plan.blocked:
                result.error, result.error_kind = plan.blocked, FailureKind.GUARD
            refused = self.check(result) if self.check else None
            if refused:
                result.error, result.error_kind = refused, FailureKind.STALE
            elif apply:
                revoking = desired.deleted and any(c.action is not Action.DELETE_GROUP for c in plan.changes)
                await blocking(adopt, self.store, desired, observed, owned, "Revoking" if revoking else None)
                try:
                    await self._apply(driver, plan, observed, run_id, result, now, fence)
                except PendingError as e:
                    self._pending(result, e)
                status = None
                if result.pending is None:
                    status = "Deleted" if desired.deleted and not plan.blocked else "Active"
                await blocking(end_tenant, self.store, ref, result.warnings, status, now)
        except PendingError as e:  # while observing: nothing was applied
            self._pending(result, e)
        except PlatformError as e:
            kind = FailureKind.UNAVAILABLE if isinstance(e, RetryableError) else FailureKind.PLATFORM
            result.error, result.error_kind = str(e), kind
            # A stale cached user may be the cause: ask the platform again next time.
            with contextlib.suppress(StoreError):
                euids = [m.platform_euid for g in desired.groups for m in g.members]
                await blocking(self.store.forget_lookups, ref.platform, euids)
        except StoreError as e:
            result.error, result.error_kind = str(e), FailureKind.STORE
        except LeaseLostError as e:
            result.error, result.error_kind = str(e), FailureKind.LEASE
        except Exception as e:  # a bug in a driver must not stop the other tenants
            log.exception("unexpected error", tenant=ref.key, platform=ref.platform)
            result.error, result.error_kind = f"unexpected {type(e).__name__}: {e}", FailureKind.INTERNAL
        if result.error:
            log.error(
                "tenant failed",
                tenant=ref.key,
                platform=ref.platform,
                kind=result.error_kind,
                error=result.error,
            )
        elif result.pending is not None:
            log.warning(
                "tenant pending on the platform",
                tenant=ref.key,
                platform=ref.platform,
                kind="pending",
                requeue_after=result.requeue_after,
                error=result.pending,
            )
        if run_id is not None:
            left = len(result.plan.withheld) if result.plan else 0
            if result.pending is not None and result.plan is not None:
                left += len(result.plan.changes) - result.applied
            outcome = "failed" if result.error else "pending" if result.pending is not None else "converged"
            try:
                why = result.error or result.pending
                await blocking(self.store.finish_run, run_id, outcome, result.applied, left, why, now=None)
            except StoreError as e:
                log.error("cannot record run", tenant=ref.key, error=str(e))
        return result

    def _pending(self, result: TenantResult, error: PendingError) -> None:
        """The run stops where the platform has not caught up: not a failure, a requeue."""
        result.pending = str(error)
        result.pending_subject = error.subject if isinstance(error, PendingChange) else result.key
        result.requeue_after = error.retry_after if error.retry_after is not None else self.pending_requeue

    async def _apply(
        self,
        driver: Driver,
        plan: Plan,
        observed: ObservedTenant,
        run_id: int | None,
        result: TenantResult,
        now: datetime,
        fence: Fence | None,
    ) -> None:
        """Apply the plan's changes in order; stop at the first failure (later changes may rely on it:
        never take access away after a failed grant). ``result.applied`` counts as it goes."""
        ref = plan.tenant.ref
        ids = {g.name: g.id for g in observed.groups}
        ensured: dict[str, PlatformUser] = {}
        # transformed euid -> the user an ENSURE_USER change of this run made or found
        unknown: set[str] = set()  # transformed euids the platform could not ensure
        for change in plan.changes:
            if change.action is Action.ADD_MEMBER and change.user is None and change.euid in unknown:
                continue  # waited for a user nobody knows: warned about, not applied
            if change.action is Action.ADD_MEMBER and change.user is None and change.euid in ensured:
                change = replace(change, user=ensured[change.euid])
            if change.action is Action.DELETE_GROUP and plan.tenant.deleted:
                # Every revoke and removal before this one succeeded (a failure stops the run).
                await blocking(
                    self.store.set_tenant_status, ref.key, ref.platform, ref.local_id, "DeletingGroups"
                )
            if fence is not None and not await fence(ref):
                raise LeaseLostError(
                    f"lost the lease on {ref.key} (another replica may hold it): stopped before "
                    f"{change.action.value} {change.group} {change.subject}".rstrip()
                )
            await self._audit(run_id, ref.key, ref.platform, change, "started")
            if change.action is Action.CREATE_GROUP:
                role = next((g.project_role for g in plan.tenant.groups if g.name == change.group), "")
                intent = (ref.platform, ref.key, change.alias, change.group, role)
                await blocking(self.store.record_group_intent, *intent)
            try:
                new_id = await apply_with_retries(
                    driver,
                    change,
                    ids.get(change.group),
                    ref,
                    attempts=self.change_attempts,
                    retry_wait=self.retry_wait,
                )
            except UnknownUserError as e:
                await self._audit(run_id, ref.key, ref.platform, change, "failed", str(e))
                if change.action is not Action.ENSURE_USER or not change.euid:
                    raise PlatformError(f"{change.action.value} {change.group}: {e}") from e
                unknown.add(change.euid)
                result.found_while_applying.append(unknown_user(plan, change.euid, str(e)))
                continue
            except PlatformError as e:
                await self._audit(run_id, ref.key, ref.platform, change, "failed", str(e))
                what = f"{change.action.value} {change.group} {change.subject}".rstrip()
                if isinstance(e, PendingError):
                    raise PendingChange(f"{what}: {e}", change.group, e.retry_after) from e
                if isinstance(e, RetryableError):
                    raise RetryableError(f"{what}: {e}", e.retry_after) from e
                raise PlatformError(f"{what}: {e}") from e
            if change.action is Action.ENSURE_USER and new_id and change.euid:
                ensured[change.euid] = PlatformUser(new_id, change.euid)
                # The next run's lookup finds the user from the cache, not from the platform.
                found = {change.euid: [(new_id, change.euid)]}
                await blocking(self.store.store_lookups, ref.platform, found, now)
                if new_id in driver.created_users:  # made, not found: ours to deprovision later
                    await blocking(self.store.record_created_user, ref.platform, new_id, change.euid, now)
            await blocking(record, self.store, ref.platform, ref.key, change, new_id, ids)
            await self._audit(run_id, ref.key, ref.platform, change, "applied")
            result.applied += 1

    async def _audit(
        self,
        run_id: int | None,
        tenant: str,
        platform: str,
        change: Change,
        outcome: str,
        error: str | None = None,
    ) -> None:
        audit_log.info(
            "change",
            audit=True,
            tenant=tenant,
            platform=platform,
            action=change.action.value,
            group=change.group,
            subject=change.subject,
            outcome=outcome,
            error=error,
        )
        what = (change.action.value, change.group, change.subject)
        await blocking(self.store.audit, run_id, tenant, platform, *what, outcome, error)
