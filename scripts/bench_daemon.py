"""The daemon under load, for `make bench` (scripts/bench.py registers these; they are not tests).

Each bench starts the real daemon (``python -m replicator run``, one replica on SQLite) against a
local moto server behind the counting proxy (tests/support/faults.py: every request the daemon
sends is seen, timed and, for one bench, answered with a fault), and reads what happened from the
state store (runs, audit trail) and the daemon's HTTP API (triggers, ``/v1/status``, ``/readyz``),
never from the daemon's internals (scripts/bench_daemon_kit.py).

Sizes (environment): ``BENCH_DAEMON_LATENCY_TENANTS`` (300), ``BENCH_DAEMON_EDITS`` (10),
``BENCH_DAEMON_HEALTHY`` (20), ``BENCH_DAEMON_MANY_TENANTS`` (10000), ``BENCH_DAEMON_MANY_RATE``
(200), ``BENCH_DAEMON_NOOP_TENANTS`` (50).
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable

import yaml
from bench_daemon_kit import (
    WRITE,
    Daemon,
    Pass,
    Site,
    applied_since,
    begin_sweep,
    configure,
    epoch,
    nearest_rank,
    one_binding_tenants,
    size,
    sweep_api,
    sweep_interval,
    wait_converged,
    wait_pass,
    world,
    write_docs,
)

Record = Callable[[str, float | None, str, str], None]
"""scripts/bench.py's ``record(name, value, unit, note)``."""


def logged(errors: str) -> str:
    """The exceptions of the daemon's log, for a note."""
    return f"; daemon log: {errors}" if errors else ""


def rerun(sweep: Pass) -> str:
    return (
        f", {sweep.again} tenants ran again before it ended (the schedule fired again)" if sweep.again else ""
    )


def bench_change_latency(record: Record, site: Site) -> None:
    """Edits of one tenant's binding (the inventory file, watched every 5 s) during a full resync
    sweep of ``BENCH_DAEMON_LATENCY_TENANTS`` tenants (3 groups each) at 20 requests/s: from the
    file write to the change's audit record, one edit after the other; next to the sweep's length."""
    from state import Store

    tenants, edits, rate = size("BENCH_DAEMON_LATENCY_TENANTS", 300), size("BENCH_DAEMON_EDITS", 10), 20.0
    workspaces = max(1, math.ceil(tenants / 100))
    projects = max(1, tenants // workspaces)
    tenants = workspaces * projects
    with world(60) as w:
        path = w.site(site, workspaces, projects, 60)
        converge = w.cli(path, "reconcile", "--all")
        interval = sweep_interval(tenants, 3, rate)
        configure(path, rate, interval)
        inventory = w.root / "org.yaml"
        docs = list(yaml.safe_load_all(inventory.read_text()))
        ws, project = f"ws{workspaces // 2}", f"p{projects // 2}"
        key = f"{ws}/{project}/aws.b"
        mine = [
            d
            for d in docs
            if d["kind"] == "meshProjectBinding" and d["metadata"]["ownedByProject"] == project
        ]
        binding = next(
            d for d in mine if d["metadata"]["ownedByWorkspace"] == ws and d["spec"]["role"] == "admin"
        )
        taken = {
            s["user"] for d in mine if d["metadata"]["ownedByWorkspace"] == ws for s in d["spec"]["subjects"]
        }
        extra = {"user": next(f"u{i}" for i in range(60) if f"u{i}" not in taken)}
        store = Store(f"sqlite:///{w.root / 'state.db'}")
        keys = {r.tenant for r in store.last_runs()}
        with Daemon(path) as daemon:
            startup = wait_pass(store, keys, daemon.started, 3 * interval + 600, daemon)
            _, how = begin_sweep(store, daemon, startup.end, interval)
            rng, latencies, applied_at = random.Random(21), [], []
            for n in range(edits):
                time.sleep(rng.uniform(0.0, 2.0))  # not in step with the daemon's 5 s watch tick
                subjects = binding["spec"]["subjects"]
                binding["spec"]["subjects"] = [*subjects, extra] if n % 2 == 0 else subjects[:-1]
                written = write_docs(inventory, docs)
                applied_at.append(applied_since(store, key, written, 300, daemon))
                latencies.append(applied_at[-1] - written)
            sweep = wait_pass(store, keys - {key}, startup.end + 1e-3, 3 * interval + 600, daemon)
            errors = daemon.errors()
        calls = w.tap.ops(sweep.start, sweep.end)
        store.close()
    during = sum(1 for t in applied_at if t <= sweep.end)
    floor, length = len(calls) / rate, sweep.end - sweep.start
    edit = (
        f"{edits} edits of one tenant's binding (the inventory file; the daemon watches it every 5 s), "
        f"one after the other, during a full resync of {tenants} tenants at {rate:g} req/s; file write "
        f"to the change's audit record; {during} of {edits} applied before the sweep ended"
    )
    record(
        "daemon_change_latency_p99",
        nearest_rank(latencies, 0.99),
        "s",
        f"{edit}; nearest rank of {len(latencies)} (= the max below 100 edits); median "
        f"{nearest_rank(latencies, 0.5):.2f} s; each: {', '.join(f'{x:.1f}' for x in latencies)} s",
    )
    record("daemon_change_latency_max", max(latencies), "s", edit)
    record(
        "daemon_resync_sweep",
        length,
        "s",
        f"{tenants} tenants x 3 groups (15 members), {rate:g} req/s, {len(calls)} calls "
        f"({len(calls) / tenants:.1f} per tenant, edits included), floor {floor:.0f} s, ratio "
        f"{length / floor:.2f}; sweep {how}{rerun(sweep)}; before it the start-up pass (every tenant at "
        f"change priority) {startup.end - startup.start:.0f} s; converged first by reconcile --all in "
        f"{converge:.0f} s{logged(errors)}",
    )


def bench_failing_tenant(record: Record, site: Site) -> None:
    """One tenant whose every platform request fails (the proxy answers 500 to each request that
    names its account or its groups) among ``BENCH_DAEMON_HEALTHY`` healthy tenants converging from
    empty at 20 requests/s; 50 plain triggers for it over 30 s through the API. Its platform
    requests in those 30 s (botocore's own retries included), and whether the others converged."""
    from platforms.aws.options import AwsOptions
    from state import Store

    healthy, triggers, window, rate = size("BENCH_DAEMON_HEALTHY", 20), 50, 30.0, 20.0
    attempts = AwsOptions.model_fields["max_attempts"].default
    with world(60, marks=(b"999999999999", b"broken.p0"), fault_rate=1.0) as w:
        path = w.site(site, 1, healthy, 60)
        inventory = w.root / "org.yaml"
        meta = {"ownedByWorkspace": "broken", "ownedByProject": "p0"}
        docs = [
            *yaml.safe_load_all(inventory.read_text()),
            {"kind": "meshWorkspace", "metadata": {"name": "broken"}},
            {"kind": "meshProject", "metadata": {"name": "p0", "ownedByWorkspace": "broken"}},
            {
                "kind": "meshTenant",
                "metadata": {**meta, "platformIdentifier": "aws.b"},
                "spec": {"localId": "999999999999", "landingZoneIdentifier": "lz"},
            },
            {
                "kind": "meshProjectBinding",
                "metadata": meta,
                "spec": {"role": "user", "subjects": [{"user": "u0"}]},
            },
        ]
        write_docs(inventory, docs)
        configure(path, rate, 3600.0)
        key, good = "broken/p0/aws.b", {f"ws0/p{p}/aws.b" for p in range(healthy)}
        store = Store(f"sqlite:///{w.root / 'state.db'}")
        answers: Counter[str] = Counter()
        with Daemon(path) as daemon:
            t0 = time.time()
            for n in range(triggers):
                time.sleep(max(0.0, t0 + n * window / triggers - time.time()))
                status, body = daemon.call("POST", f"/v1/tenants/{key}/reconcile")
                answers[
                    f"{status} {body.get('mergedInto', 'queued')}" if isinstance(body, dict) else str(status)
                ] += 1
            time.sleep(max(0.0, t0 + window - time.time()))
            failures = next(
                t["failures"] for t in daemon.call("GET", "/v1/status")[1]["tenants"] if t["tenant"] == key
            )
            done = wait_converged(store, good, 600, daemon)
            errors = daemon.errors()
        bad_calls = w.tap.ops(t0, t0 + window, hit=True)
        ops = ", ".join(f"{op.split('.')[-1]} {n}" for op, n in sorted(Counter(bad_calls).items()))
        all_bad = w.tap.ops(hit=True)
        runs = [r for r in store.runs(key) if t0 <= epoch(r.started_at) <= t0 + window]
        healthy_calls = w.tap.ops(daemon.started, done, hit=False)
        failed = sum(1 for k in good for r in store.runs(k) if r.outcome == "failed")
        changes = sum(1 for a in store.audit_trail() if a.outcome == "applied")
        store.close()
    shown = ", ".join(f"{n} x {a}" for a, n in sorted(answers.items()))
    record(
        "daemon_failing_tenant_calls_30s",
        len(bad_calls),
        "calls",
        f"one tenant whose every request fails (500), {triggers} plain triggers in {window:g} s ({shown}); "
        f"{len(runs)} runs of it in the window ({ops}; aws maxAttempts {attempts}: botocore repeats each), "
        f"failures "
        f"{failures} by /v1/status; its requests from the "
        f"daemon's start to the window's end {len(all_bad)} (not counted: the user lookup's ListUsers, "
        f"shared and cached); {healthy} healthy tenants converging from empty meanwhile at {rate:g} req/s",
    )
    floor = len(healthy_calls) / rate
    record(
        "daemon_failing_tenant_healthy_converge",
        done - daemon.started,
        "s",
        f"{healthy} healthy tenants from empty next to the failing one: {changes} changes, {failed} failed "
        f"runs, {len(healthy_calls)} requests, floor {floor:.0f} s at {rate:g} req/s, ratio "
        f"{(done - daemon.started) / floor:.2f} (daemon start included){logged(errors)}",
    )


def bench_many_tenants(record: Record, site: Site) -> None:
    """One daemon with ``BENCH_DAEMON_MANY_TENANTS`` small tenants (one binding each) against moto
    at ``BENCH_DAEMON_MANY_RATE`` requests/s (not AWS's 20: converging 10,000 tenants at 20 would
    take an hour): its peak resident memory through the start-up pass and one full no-op resync
    sweep, and the sweep's length as a multiple of its floor (requests / rate). Without
    ``POST /v1/reconcile`` the measured pass is the start-up pass itself (every tenant queued at
    once and run without a change, as in a resync), which saves waiting for the schedule."""
    from state import Store

    tenants, rate = size("BENCH_DAEMON_MANY_TENANTS", 10_000), float(size("BENCH_DAEMON_MANY_RATE", 200))
    with world(50) as w:
        path = w.site(site, 0, 0, 1, "user")  # one role mapping: one group per tenant
        one_binding_tenants(path, tenants, 50)
        converge = w.cli(path, "reconcile", "--all")
        configure(path, rate, 3600.0)
        store = Store(f"sqlite:///{w.root / 'state.db'}")
        keys = {r.tenant for r in store.last_runs()}
        with Daemon(path) as daemon:
            startup = wait_pass(store, keys, daemon.started, 7200, daemon)
            after_startup = daemon.memory_mb()[0]
            sweep, how = startup, "(the start-up pass: every tenant queued at once, as a resync does)"
            if sweep_api():
                _, how = begin_sweep(store, daemon, startup.end, 3600.0)
                sweep = wait_pass(store, keys, startup.end + 1e-3, 7200, daemon)
            now, peak = daemon.memory_mb()
            errors = daemon.errors()
        start, end = sweep.start, sweep.end
        calls = w.tap.ops(start, end)
        writes = [op for op in calls if WRITE.search(op)]
        store.close()
    if writes:
        raise RuntimeError(f"a no-op sweep wrote: {Counter(writes)}")
    floor = len(calls) / rate
    shape = f"{tenants} tenants x 1 group, 1 member, 1 permission set, {rate:g} req/s"
    record(
        "daemon_many_tenants_peak_rss",
        peak,
        "MB",
        f"{shape}; VmHWM of the daemon through its start-up pass and one no-op sweep; "
        f"RSS {after_startup:.0f} MB after the start-up pass, {now:.0f} MB after the sweep",
    )
    record(
        "daemon_many_tenants_sweep",
        end - start,
        "s",
        f"{shape}; one full no-op resync {how}, {len(calls)} requests ({len(calls) / tenants:.2f} per "
        f"tenant), writes 0 (asserted); start-up pass {startup.end - startup.start:.0f} s; converged first "
        f"by reconcile --all in {converge:.0f} s{logged(errors)}",
    )
    record(
        "daemon_many_tenants_sweep_ratio",
        (end - start) / floor,
        "x",
        f"sweep / floor ({floor:.0f} s = requests / rate)",
    )


def bench_noop_sweep(record: Record, site: Site) -> None:
    """Platform requests per tenant of one full no-op resync sweep in the daemon (AWS, moto),
    next to ``reconcile --all`` of the same tenants and to the lower bound (2 per owned group:
    members and assignments, each listed per group). Writes must be 0: the row fails otherwise."""
    from state import Store

    tenants = size("BENCH_DAEMON_NOOP_TENANTS", 50)
    with world(60) as w:
        path = w.site(site, 1, tenants, 60)
        w.cli(path, "reconcile", "--all")
        t = time.time()
        w.cli(path, "reconcile", "--all")
        cli_calls = w.tap.ops(t)
        store = Store(f"sqlite:///{w.root / 'state.db'}")
        keys = {r.tenant for r in store.last_runs()}
        groups = sum(1 for k in keys for g in store.owned_groups("aws.b", k) if g.platform_id)
        audit = len(store.audit_trail())
        interval = sweep_interval(tenants, 3, 50.0)  # no rate limit: moto answers faster than that
        configure(path, None, interval)
        with Daemon(path) as daemon:
            startup = wait_pass(store, keys, daemon.started, 3 * interval + 600, daemon)
            _, how = begin_sweep(store, daemon, startup.end, interval)
            sweep = wait_pass(store, keys, startup.end + 1e-3, 3 * interval + 600, daemon)
            errors = daemon.errors()
        if sweep.again:
            raise RuntimeError(f"{sweep.again} tenants ran twice in the sweep: the schedule fired again")
        calls = w.tap.ops(sweep.start, sweep.end)
        first = w.tap.ops(startup.start, startup.end)
        applied = len(store.audit_trail()) - audit
        store.close()
    writes = Counter(op for op in [*calls, *first, *cli_calls] if WRITE.search(op))
    if writes or applied:
        raise RuntimeError(f"a no-op pass wrote: {dict(writes)}, {applied} audited changes")
    per_tenant, bound, cli = len(calls) / tenants, 2 * groups / tenants, len(cli_calls) / tenants
    ops = ", ".join(f"{op.split('.')[-1]} {n}" for op, n in sorted(Counter(calls).items()))
    record(
        "daemon_noop_sweep_aws_calls_per_tenant",
        per_tenant,
        "calls",
        f"{tenants} tenants, {groups} owned groups, one full no-op resync {how}; {per_tenant / cli:.2f}x "
        f"reconcile --all ({cli:.2f} per tenant), {per_tenant / bound:.2f}x the lower bound "
        f"({bound:g}: 2 per owned group); start-up pass {len(first) / tenants:.2f} per tenant; "
        f"writes 0 (asserted); {ops}{logged(errors)}",
    )
