"""Prometheus metrics of the daemon, all named ``replicator_*``, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self.queue_depth = Gauge("replicator_queue_depth", "Tenants waiting to be reconciled", registry=r)
        self.last_success = Gauge(
            "replicator_last_success_timestamp_seconds",
            "When a tenant last converged",
            ["tenant"],
            registry=r,
        )
        self.config_valid = Gauge("replicator_config_valid", "1 when the loaded config is valid", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
