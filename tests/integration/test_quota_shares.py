"""Replicas on one PostgreSQL store split a platform quota's rate: each replica working against it
gets the configured rate divided by how many are; one that goes idle, stops or is killed (its
registration expires) leaves the whole rate to the others. The registrations themselves on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from replicator.service.budgets import Budget, QuotaShares
from replicator.service.metrics import Metrics
from state import Store
from state.db import utcnow
from tests.integration.test_store import _postgres_database, store, store_url  # noqa: F401 - fixtures
from tests.unit.test_budgets import ARN, site

pytestmark = pytest.mark.integration
OWNER = f"aws:eu-central-1:{ARN}"
TTL = timedelta(seconds=3)


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_database()


def test_registrations_count_live_replicas_per_owner(store: Store) -> None:  # noqa: F811 - fixture
    assert store.share_quota("q", "r1", TTL) == 1
    assert store.share_quota("q", "r1", TTL) == 1, "a renewal is not a second replica"
    assert store.share_quota("q", "r2", TTL) == 2
    assert store.share_quota("other", "r1", TTL) == 1
    assert store.quota_shares() == {"q": 2, "other": 1}
    store.leave_quota("q", "r2")
    assert store.quota_shares() == {"q": 1, "other": 1}
    store.share_quota("q", "ghost", TTL, now=utcnow() - timedelta(seconds=10))  # expired 7 s ago
    assert store.share_quota("q", "r1", TTL) == 1


class Replica:
    """One replica's budgets on its own connection to the shared store."""

    def __init__(self, name: str, url: str, tmp: Path) -> None:
        self.store = Store(url)
        self.metrics = Metrics()
        self.quotas = QuotaShares(name, self.metrics)
        config = site(tmp, {"aws.a": ARN, "aws.b": ARN}, {"aws.a": 20, "aws.b": 30}).config
        self.budget: Budget = self.quotas.configure(config, {}, self.store)["aws.a"]

    async def request(self) -> None:
        async with self.budget:
            pass

    def gauge(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"quota_owner": OWNER})


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    one, two = Replica("r1", pg_url, tmp_path), Replica("r2", pg_url, tmp_path)
    yield one, two
    one.store.close()
    two.store.close()


async def test_two_busy_replicas_get_half_each_and_an_idle_one_leaves_the_whole(
    replicas: tuple[Replica, Replica],
) -> None:
    one, two = replicas
    await one.request()  # joins before its first request: alone
    assert (one.budget.replicas, one.budget.effective_rate) == (1, 20)
    await two.request()  # joins: two work against the quota now
    assert (two.budget.replicas, two.budget.effective_rate) == (2, 10)
    await one.quotas.renew()  # the first learns it at its next renewal
    assert (one.budget.replicas, one.budget.effective_rate) == (2, 10)
    assert one.gauge("replicator_rate_limit_requests_per_second") == 10
    assert one.gauge("replicator_rate_limit_replicas") == 2

    await one.request()
    await two.quotas.renew()  # it sent a request since it joined: renewed, still two
    await one.quotas.renew()
    assert (one.budget.replicas, two.budget.replicas) == (2, 2)
    await two.quotas.renew()  # nothing sent since the last renewal: it leaves
    assert not two.budget.joined
    assert two.budget.effective_rate == 20, "an idle replica holds no share (the next request rejoins)"
    await one.request()
    await one.quotas.renew()
    assert (one.budget.replicas, one.budget.effective_rate) == (1, 20)
    assert one.store.quota_shares() == {OWNER: 1}


async def test_a_killed_replica_stops_counting_when_its_registration_expires(
    replicas: tuple[Replica, Replica],
) -> None:
    one, _ = replicas
    await one.request()
    # A replica killed after registering: its row stays until it expires.
    one.store.share_quota(OWNER, "killed", TTL, now=utcnow() - timedelta(seconds=2))
    await one.request()
    await one.quotas.renew()
    assert one.budget.replicas == 2, "registered 2 s ago with a TTL of 3 s: still live"
    one.store.share_quota(OWNER, "killed", TTL, now=utcnow() - timedelta(seconds=4))
    await one.request()
    await one.quotas.renew()
    assert (one.budget.replicas, one.budget.effective_rate) == (1, 20)


async def test_a_stopping_replica_gives_its_share_back(replicas: tuple[Replica, Replica]) -> None:
    one, two = replicas
    await one.request()
    await two.request()
    await two.quotas.keep(lambda: True)  # the daemon stopped and nothing is in flight
    assert one.store.quota_shares() == {OWNER: 1}
    await one.request()
    await one.quotas.renew()
    assert one.budget.effective_rate == 20
