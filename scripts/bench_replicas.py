"""`scripts/bench.py --only replicas`: the daemon with one and with two replicas on one PostgreSQL
store against an AWS account held to its quota (not a test of the suite).

Moto stands behind ``FaultProxy(quota=Q)``: a token bucket of Q requests/s for the whole
account, which answers 429 with ``Retry-After`` when it is empty, as Identity Center's throttling
does. The config says ``schedule.rateLimits: Q`` for the platform.
Each replica count starts from empty (a new database, moto reset): wall time from starting the
daemons until every tenant's last run converged, every request the proxy saw (429s included), the
429s and their share, the floor (requests / Q: the quota allows no faster) and wall / floor (1.0 =
exactly at the quota).

Q is 10 by default (``BENCH_REPLICAS_QUOTA``), not Identity Center's 20: on the 2-CPU machine that
writes bench/results.md, one daemon with moto and the proxy beside it sends about 20-25 requests/s
unthrottled, so a quota of 20 would measure the machine, not the budget. The default 80 tenants
(``BENCH_REPLICAS_TENANTS``) make about 640 requests with one replica, a floor of 64 s, long
enough for the daemons' start-up of 2 to 3 s not to dominate.

``BENCH_REPLICATOR_SOURCE=/path/to/checkout`` runs the daemons of another checkout (the main
branch, say, for a before figure); its rows get the suffix ``BENCH_REPLICAS_LABEL`` (default
``_before``).

The shape of each tenant (one binding of one user: one group, one member, one permission set) is
shared with ``rate_converge`` (``small_site``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

Record = Callable[[str, float | None, str, str], None]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def one_binding_docs(tenants: int, users: int) -> list[dict[str, Any]]:
    """An inventory of ``tenants`` small tenants of platform ``aws.b`` (one binding of one of
    ``users`` users, ``user<i>``, to the role ``user``: one group, one member, one permission set),
    100 to a workspace, account ids 000000000001 and up."""
    docs: list[dict[str, Any]] = [
        {"kind": "meshUser", "metadata": {"name": f"u{i}"}, "spec": {"euid": f"user{i}"}}
        for i in range(users)
    ]
    per_ws = 100
    for n in range(tenants):
        ws, pr = f"ws{n // per_ws}", f"p{n % per_ws}"
        if n % per_ws == 0:
            docs.append({"kind": "meshWorkspace", "metadata": {"name": ws}})
        meta = {"ownedByWorkspace": ws, "ownedByProject": pr}
        docs.append({"kind": "meshProject", "metadata": {"name": pr, "ownedByWorkspace": ws}})
        docs.append(
            {
                "kind": "meshTenant",
                "metadata": {**meta, "platformIdentifier": "aws.b"},
                "spec": {"localId": f"{n + 1:012d}", "landingZoneIdentifier": "lz"},
            }
        )
        docs.append(
            {
                "kind": "meshProjectBinding",
                "metadata": meta,
                "spec": {"role": "user", "subjects": [{"user": f"u{n % users}"}]},
            }
        )
    return docs


def small_site(
    root: Path, tenants: int, users: int, endpoint: str, aws: dict[str, Any], role: str, **top: Any
) -> Path:
    """A config (platform ``aws.b`` at ``endpoint``, ``aws`` merged into its block, ``top`` into the
    config) and an inventory of ``tenants`` tenants in workspaces of 100, each with one binding of
    one of ``users`` users (``user<i>``) to the one role mapping ``user`` -> ``role``."""
    docs = one_binding_docs(tenants, users)
    (root / "org.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    block = {"region": "eu-central-1", "endpointUrl": endpoint, "pollInterval": 0.01, **aws}
    config = {
        "state": "sqlite:///state.db",
        "inventory": ["org.yaml"],
        "platforms": [{"identifier": "aws.b", "type": "aws", "aws": block}],
        "landingZones": [
            {
                "identifier": "lz",
                "platform": "aws.b",
                "roleMappings": {"user": {"platformGroupAlias": "user", "platformRoles": [role]}},
            }
        ],
        **top,
    }
    (root / "replicator.yaml").write_text(yaml.safe_dump(config))
    return root / "replicator.yaml"


def _progress(engine: Any) -> tuple[int, int]:
    """(tenants whose last run converged, changes applied), read with plain SQL: the bench does
    not open a Store, which would migrate the database under another checkout's daemons."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    last = (
        "SELECT DISTINCT ON (tenant) tenant, outcome FROM runs WHERE NOT dry_run "
        "ORDER BY tenant, started_at DESC, id DESC"
    )
    try:
        with engine.connect() as conn:
            converged = sum(1 for _, outcome in conn.execute(text(last)) if outcome == "converged")
            applied = conn.execute(text("SELECT count(*) FROM audit WHERE outcome = 'applied'")).scalar()
    except SQLAlchemyError:  # the daemons have not created the schema yet
        return 0, 0
    return converged, int(applied or 0)


def bench_replicas(
    record: Record, tenants: int = 80, quota: float = 10.0, counts: tuple[int, ...] = (1, 2)
) -> None:
    """For each replica count: the daemons against moto behind the quota proxy until converged."""
    from sqlalchemy import create_engine, text

    from tests.support.faults import FaultProxy
    from tests.support.moto_aws import MotoAws

    source = os.environ.get("BENCH_REPLICATOR_SOURCE")
    suffix = os.environ.get("BENCH_REPLICAS_LABEL", "_before") if source else ""
    admin_url = os.environ.get("REPLICATOR_TEST_PG", PG_ADMIN)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        admin.connect().close()
    except Exception as e:
        print(f"replicas: skipped, PostgreSQL not reachable at {admin_url} ({type(e).__name__})")
        return
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    if source:
        env["PYTHONPATH"] = source
    who = f"the daemons of {source}" if source else "this checkout's daemons"
    for replicas in counts:
        name = f"replicator_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        procs: list[subprocess.Popen[bytes]] = []
        db = create_engine(url)
        try:
            with MotoAws() as aws, tempfile.TemporaryDirectory() as tmp:
                aws.reset()  # moto's backends live in this process: start each run empty
                users = 50
                for i in range(users):
                    aws.create_user(f"user{i}")
                role = aws.create_permission_set("user")
                with FaultProxy(aws.url, quota=quota) as proxy:
                    ids = {"identityStoreId": aws.identity_store_id, "instanceArn": aws.instance_arn}
                    schedule = {"interval": "1h", "leaseTtl": 10, "rateLimits": {"aws.b": quota}}
                    path = small_site(
                        Path(tmp), tenants, users, proxy.url, ids, role, state=url, schedule=schedule
                    )
                    t = time.perf_counter()
                    for r in range(replicas):
                        argv = [sys.executable, "-m", "replicator", "-c", str(path), "--log-level", "error"]
                        argv += ["run", "--listen", "127.0.0.1:0", "--replica-id", f"r{r}", "--workers", "4"]
                        quiet = subprocess.DEVNULL
                        procs.append(subprocess.Popen(argv, env=env, cwd=source, stdout=quiet, stderr=quiet))
                    while (done := _progress(db))[0] < tenants:
                        if any(p.poll() is not None for p in procs):
                            raise RuntimeError(f"a daemon exited with {[p.poll() for p in procs]}")
                        if time.perf_counter() - t > 900:
                            raise RuntimeError(f"{replicas} replica(s) did not converge in 15 minutes")
                        time.sleep(0.2)
                    elapsed = time.perf_counter() - t
                    requests, throttled = len(proxy.log), proxy.counts["quota"]
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)
            db.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        floor = requests / quota
        row = f"daemon_{replicas}_replica{suffix}"
        shape = f"{tenants} tenants x 1 group, 1 member, 1 permission set; {done[1]} changes; {who}"
        record(f"{row}_converge", elapsed, "s", f"{shape}; rateLimits {quota:g}, quota {quota:g} req/s")
        record(f"{row}_requests", requests, "calls", "every request the quota proxy saw, 429s included")
        record(
            f"{row}_429",
            throttled,
            "429s",
            f"{throttled / requests:.1%} of requests answered 429 by the quota (target under 1%)",
        )
        record(
            f"{row}_ratio",
            elapsed / floor,
            "x",
            f"wall / floor, floor = requests / {quota:g} = {floor:.1f} s (target within 1.1)",
        )
    admin.dispose()
