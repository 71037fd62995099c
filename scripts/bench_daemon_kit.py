"""What the daemon benches (scripts/bench_daemon.py) share: moto behind the counting proxy, the
daemon in a process of its own with its HTTP API, and waiting for passes over the tenants, read
from the state store's run records and audit trail.

A full resync sweep is started with ``POST /v1/reconcile`` when the daemon's OpenAPI document has
it; otherwise the sweep is the scheduled one (``schedule.interval`` with no jitter, long enough for
the daemon's start-up pass, in which every tenant runs once at change priority, to end first).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from bench_replicas import one_binding_docs  # scripts/ is on sys.path

Site = Callable[..., Path]
"""scripts/bench.py's ``synthetic_site``: config and inventory of W workspaces x P projects."""

KEY_ENV, KEY = "BENCH_DAEMON_KEY", "bench-daemon-key"
WRITE = re.compile(r"\.(Create|Delete|Update|Put)")
"""AWS operations (``X-Amz-Target``) that change something."""
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", KEY_ENV: KEY}
NOOP_CALLS_PER_GROUP = 3
"""What a daemon run of one tenant reads per owned group today (no group scan below 20 groups):
only used to choose ``schedule.interval`` (the start-up pass must end before the sweep)."""


def size(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def epoch(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


class Tap:
    """The proxy's ``match``: remembers every request (wall time, operation, whether its body names
    one of ``marks``); only a request that names a mark is eligible for the proxy's faults."""

    def __init__(self, marks: Sequence[bytes] = ()) -> None:
        self.marks = tuple(marks)
        self.seen: list[tuple[float, str, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> bool:
        hit = any(m in request.body for m in self.marks)
        with self._lock:
            self.seen.append((time.time(), request.operation, hit))
        return hit

    def ops(self, since: float = 0.0, until: float = math.inf, hit: bool | None = None) -> list[str]:
        with self._lock:
            return [op for t, op, h in self.seen if since <= t <= until and (hit is None or h == hit)]


@dataclass
class World:
    """moto with ``users`` users and three permission sets, the proxy in front of it, a directory."""

    root: Path
    aws: Any
    proxy: Any
    tap: Tap
    roles: dict[str, str]

    def site(self, site: Site, workspaces: int, projects: int, users: int, *roles: str) -> Path:
        """The config and inventory; with ``roles``, only those role mappings (one group each)."""
        ids = {"identityStoreId": self.aws.identity_store_id, "instanceArn": self.aws.instance_arn}
        mapped = {r: arn for r, arn in self.roles.items() if not roles or r in roles}
        return site(self.root, workspaces, projects, users, self.proxy.url, ids, mapped)

    def cli(self, path: Path, *args: str) -> float:
        """``replicator -c path ARGS`` to the end (exit 0 required); its wall time."""
        argv = [sys.executable, "-m", "replicator", "-c", str(path), "--log-level", "error", *args]
        t = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **ENV}, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"replicator {' '.join(args)}: exit {out.returncode}: {out.stdout[-2000:]}")
        return time.perf_counter() - t


@contextmanager
def world(users: int, marks: Sequence[bytes] = (), fault_rate: float = 0.0) -> Iterator[World]:
    from tests.support.faults import FaultProxy
    from tests.support.moto_aws import MotoAws

    tap = Tap(marks)
    with MotoAws() as aws, tempfile.TemporaryDirectory() as tmp:
        # moto's backends are not thread-safe: under concurrent requests one now and then iterates
        # a dict another changes and answers 500 (retried by botocore); werkzeug would print each.
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        aws.reset()
        for i in range(users):
            aws.create_user(f"user{i}")
        roles = {r: aws.create_permission_set(r) for r in ("admin", "user", "reader")}
        with FaultProxy(aws.url, rate=fault_rate, faults={"500": 1}, match=tap) as proxy:
            yield World(Path(tmp), aws, proxy, tap, roles)


def configure(path: Path, rate: float | None, interval: float) -> None:
    """The daemon's settings on top of the site's config: the rate budget, the resync schedule
    (no jitter), a ``write`` API key."""
    config = yaml.safe_load(path.read_text())
    schedule: dict[str, Any] = {"interval": interval, "jitter": 0}
    if rate:
        schedule["rateLimits"] = {"aws.b": rate}
    config["schedule"] = schedule
    config["api"] = {"keys": [{"name": "bench", "secret": {"env": KEY_ENV}, "scopes": ["write"]}]}
    path.write_text(yaml.safe_dump(config))


def sweep_api() -> bool:
    """Whether the daemon can be asked for a full resync (``POST /v1/reconcile``)."""
    from replicator.service.openapi import openapi_document

    return "/v1/reconcile" in openapi_document().get("paths", {})


def sweep_interval(tenants: int, groups: int, rate: float) -> float:
    """``schedule.interval``: 3600 s when the sweep can be asked for, else one and a half no-op
    passes at ``rate`` plus 30 s, so that the start-up pass ends before the scheduled sweep."""
    return 3600.0 if sweep_api() else 1.5 * tenants * groups * NOOP_CALLS_PER_GROUP / rate + 30


class Daemon:
    """``replicator run`` in a process of its own, on a free port; its log goes to ``daemon.log``."""

    def __init__(self, path: Path, workers: int = 4) -> None:
        self.path, self.workers = path, workers
        self.log = path.parent / "daemon.log"

    def __enter__(self) -> Daemon:
        from tests.support.local_server import free_port

        self.port = free_port()
        level = os.environ.get("BENCH_DAEMON_LOG_LEVEL", "warning")  # info: every run, for a diagnosis
        argv = [sys.executable, "-m", "replicator", "-c", str(self.path), "--log-level", level, "run"]
        argv += ["--listen", f"127.0.0.1:{self.port}", "--replica-id", "r0", "--workers", str(self.workers)]
        self._out = self.log.open("ab")
        self.started = time.time()
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **ENV}, stdout=self._out, stderr=subprocess.STDOUT, cwd=self.path.parent
        )
        deadline = time.time() + 120
        while self.call("GET", "/readyz")[0] != 200:
            self.check()
            if time.time() > deadline:
                raise RuntimeError(f"the daemon was not ready in 120 s: {self.tail()}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        if keep := os.environ.get("BENCH_DAEMON_KEEP_LOG"):  # a path: the log outlives the bench
            Path(keep).write_bytes(self.log.read_bytes())

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def errors(self) -> str:
        """The exceptions in the daemon's log, by their last line, with counts ("" when none)."""
        lines = self.log.read_text(errors="replace").splitlines()
        found: Counter[str] = Counter()
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                j = i + 1
                while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                    j += 1
                found[lines[j][:160] if j < len(lines) else "?"] += 1
        return "; ".join(f"{n} x {what}" for what, n in found.most_common())

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}: {self.tail()}")

    def call(self, method: str, path: str) -> tuple[int, Any]:
        """One HTTP request with the API key; (status, JSON body or text); (0, error) unreachable."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method, headers={"Authorization": f"Bearer {KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError as e:
            return 0, str(e)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def memory_mb(self) -> tuple[float, float]:
        """(resident now, peak resident) of the daemon process, MB, from /proc."""
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Pass:
    """One pass over the tenants: the first run of each tenant since a moment."""

    start: float
    """When the first of those runs started (epoch seconds)."""
    end: float
    """When the last of them ended."""
    again: int
    """Tenants that started another run before the pass ended (the schedule fired once more)."""


def wait_pass(store: Any, keys: set[str], since: float, timeout: float, daemon: Daemon) -> Pass:
    """Wait until every tenant of ``keys`` has a run that started at ``since`` or later and ended.
    The newest runs (one query) say when each tenant has started one; then each tenant's runs say
    when its first such run ended, even if it has run again since."""
    deadline, pause = time.time() + timeout, 1.0 if len(keys) < 2000 else 5.0

    def waited(what: str) -> None:
        daemon.check()
        if time.time() > deadline:
            raise RuntimeError(f"{what} in {timeout:.0f} s; daemon log: {daemon.errors() or 'no errors'}")
        time.sleep(pause)

    while len(
        started := [r for r in store.last_runs() if r.tenant in keys and epoch(r.started_at) >= since]
    ) < len(keys):
        waited(f"{len(started)} of {len(keys)} tenants started a run")
    first: dict[str, Any] = {}
    later: dict[str, list[float]] = {}
    while len(first) < len(keys):
        for key in keys - first.keys():
            runs = [r for r in store.runs(key) if epoch(r.started_at) >= since]
            if runs and runs[0].finished_at is not None:
                first[key], later[key] = runs[0], [epoch(r.started_at) for r in runs[1:]]
        if len(first) < len(keys):
            waited(f"{len(first)} of {len(keys)} tenants ended a run")
    start = min(epoch(r.started_at) for r in first.values())
    end = max(epoch(r.finished_at) for r in first.values())
    return Pass(start, end, sum(1 for times in later.values() if any(t <= end for t in times)))


def begin_sweep(store: Any, daemon: Daemon, after: float, interval: float) -> tuple[float, str]:
    """Start a full resync now where the daemon can be asked for one, else wait for the scheduled
    one (``interval`` after the start); (when its first run started, how the sweep was started).
    ``after`` is when the start-up pass ended: every run starting later belongs to the sweep."""
    how = f"started by the schedule, {interval:.0f} s after the daemon"
    if sweep_api():
        status, body = daemon.call("POST", "/v1/reconcile")
        if status >= 300:
            raise RuntimeError(f"POST /v1/reconcile answered {status}: {body}")
        how = "started by POST /v1/reconcile"
    elif after > daemon.started + interval:
        raise RuntimeError(f"the start-up pass outlasted schedule.interval ({interval:.0f} s)")
    deadline = time.time() + interval + 120
    while True:
        started = [epoch(r.started_at) for r in store.last_runs() if epoch(r.started_at) > after]
        if started:
            return min(started), how
        daemon.check()
        if time.time() > deadline:
            raise RuntimeError("no sweep started")
        time.sleep(0.5)


def write_docs(path: Path, docs: list[dict[str, Any]]) -> float:
    """Replace the inventory file at once (the daemon never reads half a file); when it was."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    at = time.time()
    os.replace(tmp, path)
    return at


def applied_since(store: Any, tenant: str, since: float, timeout: float, daemon: Daemon) -> float:
    """When the first change of ``tenant`` audited as applied at ``since`` or later was applied."""
    deadline = time.time() + timeout
    while True:
        at = [epoch(a.at) for a in store.audit_trail(tenant) if a.outcome == "applied"]
        if fresh := [t for t in at if t >= since]:
            return min(fresh)
        daemon.check()
        if time.time() > deadline:
            raise RuntimeError(f"the change of {tenant} was not applied in {timeout:.0f} s")
        time.sleep(0.1)


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def wait_converged(store: Any, keys: set[str], timeout: float, daemon: Daemon) -> float:
    """Wait until the newest run of every tenant of ``keys`` converged; when the last one ended."""
    deadline = time.time() + timeout
    while True:
        newest = [r for r in store.last_runs() if r.tenant in keys and r.outcome == "converged"]
        if len(newest) == len(keys):
            return max(epoch(r.finished_at) for r in newest)
        daemon.check()
        if time.time() > deadline:
            raise RuntimeError(f"{len(newest)} of {len(keys)} tenants converged in {timeout:.0f} s")
        time.sleep(0.5)


def one_binding_tenants(path: Path, tenants: int, users: int) -> None:
    """Replace the site's inventory by ``tenants`` small tenants (one binding of one user: one
    group, one member, one permission set), 100 to a workspace."""
    docs = one_binding_docs(tenants, users)
    write_docs(path.parent / "org.yaml", docs)
