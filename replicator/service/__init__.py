"""The daemon: scheduler, work queue, leases, HTTP app (health, metrics, trigger, status)."""
