"""Does the daemon's event loop stay free under load? For `scripts/bench.py --only loop` (not a test).

A `replicator run` process is started and a separate prober process asks its `/healthz` again and
again (every 20 ms, one request at a time) and reads `replicator_event_loop_lag_last_seconds`
from `/metrics` every 0.25 s, while:

- (a) ``BENCH_LOOP_USERS`` (10,000) SCIM users are created through the SCIM API by
  ``BENCH_LOOP_CLIENTS`` (4) concurrent clients (each write is validated and
  asks for a reload, so the daemon's CPU is busy the whole time);
- (b) the daemon's sweep over ``BENCH_LOOP_TENANTS`` (1,000) tenants on moto (AWS Identity Center
  over HTTP): every tenant queued at start (one group, one member, one permission set each),
  until every tenant's last run converged.

Rows: /healthz latency p50/p99/max (target: p99 under 100 ms), the largest lag sample, and for
(a) the wall time of the creates. The prober is a process of its own so that the clients and the
moto server in this process do not slow its measurements down. ``BENCH_LOOP_CODE=/path/to/checkout``
runs that checkout's daemon instead (for a figure from before a change). A size of 0 skips its part.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from bench_replicas import one_binding_docs  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
SCIM_TOKEN = "bench-loop-scim-token"
LAG = re.compile(r"^replicator_event_loop_lag_last_seconds ([0-9.eE+-]+)$", re.M)

Record = Callable[[str, float | None, str, str], None]


# --- the prober (a process of its own: `python scripts/bench_loop.py probe URL OUT STOP`) ---------


def probe(base: str, out: Path, stop: Path) -> None:
    """/healthz latencies and lag samples until the file ``stop`` exists; then JSON into ``out``."""
    import httpx

    latencies: list[float] = []
    lags: list[float] = []
    failures = 0
    # The gauge holds the sample taken up to 0.25 s before a scrape: the first 0.5 s are left
    # out, so that the daemon's start-up (before it served) is not counted.
    next_scrape, counted_from = 0.0, time.monotonic() + 0.5
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.exists():
            t = time.perf_counter()
            try:
                ok = http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            failures += 0 if ok else 1
            if time.monotonic() >= next_scrape:
                next_scrape = time.monotonic() + 0.25
                with contextlib.suppress(httpx.HTTPError):
                    found = LAG.search(http.get("/metrics").text)
                    if found and time.monotonic() >= counted_from:
                        lags.append(float(found.group(1)))
            time.sleep(0.02)
    out.write_text(json.dumps({"latencies": latencies, "lags": lags, "failures": failures}))


@contextlib.contextmanager
def probing(base: str, tmp: Path) -> Iterator[dict[str, Any]]:
    """Run the prober around the block; the dict it yields is filled with its results after."""
    out, stop = tmp / "probe.json", tmp / "probe.stop"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "probe", base, str(out), str(stop)])
    results: dict[str, Any] = {}
    try:
        yield results
    finally:
        stop.touch()
        proc.wait(timeout=120)
    results.update(json.loads(out.read_text()))


def summarize(record: Record, prefix: str, results: dict[str, Any], what: str) -> None:
    lat = sorted(results["latencies"])
    if not lat:
        record(f"{prefix}_healthz_p99", None, "ms", f"no /healthz answer measured while {what}")
        return
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    n, failed = len(lat), results["failures"]
    record(f"{prefix}_healthz_p50", p50 * 1000, "ms", f"{n} /healthz requests while {what}")
    record(f"{prefix}_healthz_p99", p99 * 1000, "ms", f"target < 100 ms; {failed} not 200")
    record(f"{prefix}_healthz_max", lat[-1] * 1000, "ms", "slowest /healthz answer")
    lags = results["lags"]
    record(
        f"{prefix}_loop_lag_max",
        max(lags) * 1000 if lags else None,
        "ms",
        f"largest replicator_event_loop_lag_last_seconds of {len(lags)} scrapes",
    )


# --- the daemon ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(config: Path, env: dict[str, str], workers: int) -> Iterator[str]:
    """A `replicator run` process on a free port until the block ends; yields its base URL."""
    import httpx

    port = free_port()
    argv = [sys.executable, "-m", "replicator", "-c", str(config), "--log-level", "error", "run"]
    argv += ["--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
    log = (config.parent / "daemon.log").open("w")
    env = {**os.environ, **env}
    if os.environ.get("BENCH_LOOP_CODE"):  # another checkout's daemon (a "before" figure)
        env["PYTHONPATH"] = os.environ["BENCH_LOOP_CODE"]
    code = os.environ.get("BENCH_LOOP_CODE") or None  # `-m` puts the working directory first
    proc = subprocess.Popen(argv, env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the daemon exited: " + (config.parent / "daemon.log").read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not get ready in 10 minutes")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()


# --- (a) SCIM creates ---------------------------------------------------------------------------


def scim_user(i: int) -> dict[str, Any]:
    name = f"bench.user{i:05d}@example.com"
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": f"ext-{i}",
        "userName": name,
        "active": True,
        "displayName": f"Bench User {i}",
        "emails": [{"primary": True, "type": "work", "value": name}],
        "name": {"givenName": "Bench", "familyName": f"User{i}"},
    }


def scim_site(root: Path) -> Path:
    """A config in ``root`` with SCIM on (token from ``BENCH_SCIM_TOKEN``), stored objects read from
    ``root/state.db`` and one workspace in the inventory files; returns the config's path."""
    (root / "inventory").mkdir()
    (root / "inventory" / "org.yaml").write_text(
        yaml.safe_dump({"kind": "meshWorkspace", "metadata": {"name": "bench"}})
    )
    config = {
        "state": "sqlite:///state.db",
        "inventory": ["inventory"],
        "storedObjects": True,
        "identity": {"scim": {"enabled": True, "token": {"env": "BENCH_SCIM_TOKEN"}}},
    }
    (root / "replicator.yaml").write_text(yaml.safe_dump(config))
    return root / "replicator.yaml"


def bench_scim(record: Record, users: int, clients: int) -> None:
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with daemon(scim_site(root), {"BENCH_SCIM_TOKEN": SCIM_TOKEN}, workers=1) as base:
            todo = iter(range(users))
            lock = threading.Lock()
            errors: list[str] = []

            def client() -> None:
                headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
                with httpx.Client(base_url=f"{base}/scim/v2", headers=headers, timeout=600) as http:
                    while True:
                        with lock:
                            i = next(todo, None)
                        if i is None or errors:
                            return
                        r = http.post("/Users", json=scim_user(i))
                        if r.status_code != 201:
                            errors.append(f"user {i}: {r.status_code} {r.text[:200]}")

            with probing(base, root) as results:
                t = time.perf_counter()
                threads = [threading.Thread(target=client) for _ in range(clients)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                elapsed = time.perf_counter() - t
            if errors:
                raise RuntimeError(f"SCIM creates failed: {errors[:3]}")
    what = f"{users} SCIM users were created by {clients} clients"
    record("loop_scim_creates_wall", elapsed, "s", f"{users} creates, {clients} clients, SQLite store")
    summarize(record, "loop_scim", results, what)


# --- (b) a sweep over many tenants --------------------------------------------------------------


def bench_sweep(record: Record, tenants: int) -> None:
    from state import Store
    from tests.support.moto_aws import MotoAws

    users = 50
    with MotoAws() as aws, tempfile.TemporaryDirectory() as tmp:
        aws.reset()
        for i in range(users):
            aws.create_user(f"user{i}")
        role = aws.create_permission_set("user")
        root = Path(tmp)
        (root / "org.yaml").write_text(yaml.safe_dump_all(one_binding_docs(tenants, users), sort_keys=False))
        options = {"region": aws.region, "endpointUrl": aws.url, "pollInterval": 0.01}
        options |= {"identityStoreId": aws.identity_store_id, "instanceArn": aws.instance_arn}
        config = {
            "state": "sqlite:///state.db",
            "inventory": ["org.yaml"],
            "platforms": [{"identifier": "aws.b", "type": "aws", "aws": options}],
            "landingZones": [
                {
                    "identifier": "lz",
                    "platform": "aws.b",
                    "roleMappings": {"user": {"platformGroupAlias": "user", "platformRoles": [role]}},
                }
            ],
            "schedule": {"interval": "1h", "concurrency": {"aws.b": 8}},
        }
        (root / "replicator.yaml").write_text(yaml.safe_dump(config))
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        with daemon(root / "replicator.yaml", env, workers=8) as base:
            store = Store(f"sqlite:///{root / 'state.db'}")
            with probing(base, root) as results:
                t = time.perf_counter()
                while True:
                    runs = store.last_runs()
                    if len(runs) >= tenants and all(r.outcome == "converged" for r in runs):
                        break
                    if time.perf_counter() - t > 3600:
                        raise RuntimeError("the sweep did not converge within an hour")
                    time.sleep(1)
                elapsed = time.perf_counter() - t
            store.close()
    record("loop_sweep_wall", elapsed, "s", f"{tenants} tenants converged from empty on moto, 8 workers")
    summarize(record, "loop_sweep", results, f"the daemon swept {tenants} tenants on moto")


def bench_loop(record: Record) -> None:
    """Both measurements, sizes from the environment (see the module docstring)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    users, clients = (
        int(os.environ.get("BENCH_LOOP_USERS", "10000")),
        int(os.environ.get("BENCH_LOOP_CLIENTS", "4")),
    )
    if users:
        bench_scim(record, users, clients)
    tenants = int(os.environ.get("BENCH_LOOP_TENANTS", "1000"))
    if tenants:
        bench_sweep(record, tenants)


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    probe(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
