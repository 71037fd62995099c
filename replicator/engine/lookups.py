"""The user lookup of one platform's run: the state store's cache first, one batched driver lookup
for the rest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from platforms.contract import Driver, PlatformError, PlatformUser
from replicator.core.model import DesiredTenant
from replicator.inputs.validate import Validated
from replicator.logs import get_logger
from replicator.threads import blocking
from state import Store

log = get_logger("replicator.engine")


async def lookup(
    store: Store,
    driver: Driver,
    v: Validated,
    platform_id: str,
    tenants: Sequence[DesiredTenant],
    now: datetime,
) -> dict[str, tuple[PlatformUser, ...]]:
    """Every transformed euid of these tenants: from the cache when fresh, else one batched
    driver lookup. Found users are cached; not-found (or awaiting a first login) is asked again."""
    euids = sorted({m.platform_euid for d in tenants for g in d.groups for m in g.members})
    ttl = timedelta(seconds=v.config.replication.lookup_cache_ttl)
    cached = (
        await blocking(store.cached_lookups, platform_id, euids, ttl, now) if ttl.total_seconds() > 0 else {}
    )
    result = {e: tuple(PlatformUser(i, n) for i, n in users) for e, users in cached.items()}
    missing = [e for e in euids if e not in result]
    if missing:
        fresh = await driver.lookup_users(missing)
        absent = [e for e in missing if e not in fresh]
        if absent:
            raise PlatformError(f"the driver returned no lookup result for {len(absent)} euids")
        # A user awaiting the first login is not cached, as not-found is not: asked again.
        found = {e: [(u.id, u.name) for u in fresh[e] if not u.awaiting_login] for e in missing}
        await blocking(store.store_lookups, platform_id, found, now)
        result.update({e: fresh[e] for e in missing})
    log.debug("lookup", platform=platform_id, euids=len(euids), cached=len(cached), asked=len(missing))
    return result
