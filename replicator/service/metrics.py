"""Prometheus metrics of the daemon, all named ``replicator_*``, in a registry of their own, and the
task that measures the event loop's lag."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# No ``*_created`` series beside each counter and histogram: no dashboard or alert uses them, and
# they double the series a scrape stores (Prometheus computes rates without them).
disable_created_metrics()  # type: ignore[no-untyped-call]

LAG_INTERVAL = 0.25
"""Seconds between two samples of the event loop's lag."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "replicator_reconcile_duration_seconds",
            "Duration of one tenant reconcile",
            ["platform"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.changes = Counter(
            "replicator_changes_applied_total",
            "Changes applied to platforms",
            ["platform", "action"],
            registry=r,
        )
        self.warnings = Gauge(
            "replicator_warnings", "Open replication warnings after the last reconcile", ["code"], registry=r
        )
        self.errors = Counter(
            "replicator_errors_total", "Failed tenant reconciles", ["platform", "kind"], registry=r
        )
        self.requeues = Counter(
            "replicator_requeues_total",
            "Tenant reconciles that ended pending on the platform (it had not caught up with our own "
            "writes): requeued after a delay, not failed",
            ["platform"],
            registry=r,
        )
        self.platform_calls = Counter(
            "replicator_platform_calls_total",
            "Requests sent to a platform by reconciles (pages and retries counted)",
            ["platform"],
            registry=r,
        )
        # Every pause of a platform's request budget: the platform answered "throttled, retry after
        # N seconds" (HTTP 429, or 503 with Retry-After), which every driver reports through
        # ``CallBudget.pause``. Throttling an SDK retried by itself without such an answer (botocore's
        # backoff on AWS throttling errors) does not reach the budget and is not counted here.
        self.platform_throttled = Counter(
            "replicator_platform_throttled_total",
            "Answers in which a platform throttled a reconcile and said how long to wait (HTTP 429, or "
            "503 with Retry-After): each paused the platform's request budget for every worker",
            ["platform"],
            registry=r,
        )
        # No tenant label: the log line "lease lost" names the tenant.
        self.lease_lost = Counter(
            "replicator_lease_lost_total",
            "Tenant leases lost by runs of this replica: a renewal refused (another run took the "
            "tenant after the lease expired) or impossible (the state store did not answer); the run "
            "stops before its next change",
            registry=r,
        )
        self.queue_depth = Gauge("replicator_queue_depth", "Tenants waiting to be reconciled", registry=r)
        # The work queue, named as client-go's workqueue metrics are.
        self.workqueue_depth = Gauge(
            "replicator_workqueue_depth",
            "Tenants waiting to be reconciled, by priority",
            ["priority"],
            registry=r,
        )
        self.workqueue_adds = Counter(
            "replicator_workqueue_adds_total",
            "Tenants queued (not counting adds merged into a waiting or running one), by reason",
            ["reason"],
            registry=r,
        )
        self.workqueue_queue_seconds = Histogram(
            "replicator_workqueue_queue_duration_seconds",
            "How long a tenant waited in the queue before a worker took it",
            registry=r,
            buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.workqueue_work_seconds = Histogram(
            "replicator_workqueue_work_duration_seconds",
            "How long a worker spent on a tenant (lease, run, bookkeeping)",
            registry=r,
            buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600),
        )
        self.workqueue_retries = Counter(
            "replicator_workqueue_retries_total", "Tenants put in backoff after a failed run", registry=r
        )
        self.workqueue_unfinished = Gauge(
            "replicator_workqueue_unfinished_work_seconds",
            "Seconds of work in progress: the sum of how long each running tenant has run so far "
            "(growing without end: stuck workers)",
            registry=r,
        )
        self.workqueue_longest = Gauge(
            "replicator_workqueue_longest_running_processor_seconds",
            "How long the longest-running tenant run has run so far",
            registry=r,
        )
        self.last_success = Gauge(
            "replicator_last_success_timestamp_seconds",
            "When a tenant last converged",
            ["tenant"],
            registry=r,
        )
        self.rate_limit = Gauge(
            "replicator_rate_limit_requests_per_second",
            "Requests per second this replica may send under a platform quota (schedule.rateLimits "
            "divided by the replicas working against it)",
            ["quota_owner"],
            registry=r,
        )
        self.rate_limit_replicas = Gauge(
            "replicator_rate_limit_replicas",
            "Replicas working against a platform quota (this one included), who split its rate",
            ["quota_owner"],
            registry=r,
        )
        self.config_valid = Gauge("replicator_config_valid", "1 when the loaded config is valid", registry=r)
        self.loop_lag = Histogram(
            "replicator_event_loop_lag_seconds",
            f"How much later than asked the event loop woke a task sleeping {LAG_INTERVAL:g} s (time "
            "the loop was busy with something else: HTTP answers and lease renewals wait as long)",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.loop_lag_last = Gauge(
            "replicator_event_loop_lag_last_seconds", "The event loop's lag at the last sample", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def forget_tenants(self, removed: Iterable[str]) -> None:
        """Drop the ``replicator_last_success_timestamp_seconds`` series of tenants removed from the
        inventory: nothing reconciles them any more, and an alert on the age of their last success
        would fire for them for ever."""
        for tenant in removed:
            with contextlib.suppress(KeyError):  # never succeeded here: no series
                self.last_success.remove(tenant)


async def sample_loop_lag(metrics: Metrics, stopping: asyncio.Event, interval: float = LAG_INTERVAL) -> None:
    """Sleep ``interval`` again and again until ``stopping``; each time record how much later than
    asked the loop woke this task: ``replicator_event_loop_lag_seconds``."""
    while not stopping.is_set():
        asked = time.monotonic() + interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            return
        lag = max(0.0, time.monotonic() - asked)
        metrics.loop_lag.observe(lag)
        metrics.loop_lag_last.set(lag)
