"""Tenant leases for runs that apply: the daemon's workers and the one-shot ``reconcile`` and
``apply`` take the same lease in the state store before they change a tenant, so that no two
runs (on one replica, on several, or a daemon and a command line) change one tenant at once.

A lease belongs to one run: acquiring it gives a fencing token larger than any before it. The run
renews it every third of its time to live, and once more right before each change is applied
(the engine's fence): a change is applied only while the lease is provably this run's. A renewal
that fails, or a store that cannot answer, counts as lost, and the run stops before its next
change. The lease is released when the run ends, unless it was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from replicator.logs import get_logger
from replicator.threads import blocking
from state import StoreError

if TYPE_CHECKING:
    from platforms.contract import TenantRef
    from state import Store

log = get_logger("replicator.engine.leases")


@dataclass
class Lease:
    """One run's hold on one tenant."""

    key: str
    holder: str
    token: int
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Held:
    """The tenant's lease is someone else's: the run did not start."""

    key: str
    holder: str | None
    """Who holds it (a replica id, or a one-shot run's ``reconcile@host:pid``); None when it was
    released between the attempt and the question."""

    @property
    def message(self) -> str:
        who = f"{self.holder!r}" if self.holder else "another run"
        return (
            f"held by {who}: another run is working on this tenant (its lease in the state store); "
            "nothing was done here"
        )


@dataclass(frozen=True)
class TenantLeases:
    """Acquires, renews and releases the tenant leases of one holder (a replica, a command)."""

    store: Store
    holder: str
    ttl: timedelta
    on_lost: Callable[[], None] | None = None
    """Called once for each lease lost (the daemon counts them: ``replicator_lease_lost_total``)."""

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Lease | Held]:
        """The tenant's lease for the block (renewed meanwhile, released after), or :class:`Held`
        when another run holds it (the block then does nothing with the tenant)."""
        token = await blocking(self.store.acquire_lease, key, self.holder, self.ttl)
        if token is None:
            holder = await blocking(self.store.lease_holder, key)
            yield Held(key, holder)
            return
        lease = Lease(key, self.holder, token)
        renewer = asyncio.ensure_future(self._keep_renewing(lease))
        try:
            yield lease
        finally:
            renewer.cancel()
            if not lease.lost.is_set():
                with contextlib.suppress(StoreError):
                    await blocking(self.store.release_lease, key, self.holder, token)

    async def fence(self, lease: Lease, _: TenantRef | None = None) -> bool:
        """Whether the lease is still this run's, proven by renewing it: checked before each change."""
        return not lease.lost.is_set() and await self._renew(lease)

    async def _renew(self, lease: Lease) -> bool:
        try:
            ok = await blocking(self.store.renew_lease, lease.key, lease.holder, lease.token, self.ttl)
        except StoreError as e:  # cannot prove we still hold it: stop as if lost
            log.warning("cannot renew the lease", tenant=lease.key, replica=lease.holder, error=str(e))
            ok = False
        if not ok and not lease.lost.is_set():
            lease.lost.set()
            log.warning("lease lost", tenant=lease.key, replica=lease.holder, lease_token=lease.token)
            if self.on_lost is not None:
                self.on_lost()
        return ok

    async def _keep_renewing(self, lease: Lease) -> None:
        while not lease.lost.is_set():
            await asyncio.sleep(self.ttl.total_seconds() / 3)
            await self._renew(lease)
