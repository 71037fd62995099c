"""One tenant run under the tenant's lease in the state store, so that no two replicas reconcile
the same tenant at once and a replica that lost its lease stops writing.

The lease is renewed every third of its time to live while the run goes on, and once more right
before each change is applied (the engine's fence): a change is applied only while the lease is
provably ours. A renewal that fails, or a store that cannot answer, counts as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from replicator.logs import get_logger
from replicator.threads import blocking
from state import StoreError

if TYPE_CHECKING:
    from replicator.engine.runner import Fence
    from state import Store

log = get_logger("replicator.service.daemon")

T = TypeVar("T")


async def run_under_lease(
    store: Store, key: str, replica: str, ttl: timedelta, run: Callable[[Fence], Awaitable[T]]
) -> T | None:
    """``run(fence)`` while this replica holds the lease ``key``; None (and nothing run) when
    another replica holds it. The lease is released afterwards unless it was lost."""
    token = await blocking(store.acquire_lease, key, replica, ttl)
    if token is None:
        return None
    lost = asyncio.Event()

    async def renew() -> bool:
        try:
            ok = await blocking(store.renew_lease, key, replica, token, ttl)
        except StoreError as e:  # cannot prove we still hold it: stop as if lost
            log.error("cannot renew the lease", tenant=key, error=str(e))
            ok = False
        if not ok:
            lost.set()
        return ok

    async def keep_renewing() -> None:
        while not lost.is_set():
            await asyncio.sleep(ttl.total_seconds() / 3)
            if not await renew():
                log.error("lease lost while reconciling", tenant=key, replica=replica)

    async def fence(_: object) -> bool:
        return not lost.is_set() and await renew()

    renewer = asyncio.ensure_future(keep_renewing())
    try:
        return await run(fence)
    finally:
        renewer.cancel()
        if not lost.is_set():
            with contextlib.suppress(StoreError):
                await blocking(store.release_lease, key, replica)
