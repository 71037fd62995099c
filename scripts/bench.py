"""`make bench`: the speed numbers that must not live in unit tests.

- CLI start-up (`replicator --help`), median of several runs, with the heavy SDKs lazily imported;
- load + validate + compile + plan of a large synthetic organisation (pure core, no platform);
- a full reconcile and a no-op reconcile of many tenants against a local moto server (AWS calls
  per no-op tenant, wall time);
- the daemon with one and with two replicas on PostgreSQL against moto held to a quota of
  requests/s equal to its `rateLimits` (scripts/bench_replicas.py; skipped without PostgreSQL);
- the daemon's event loop under load (scripts/bench_loop.py): /healthz latency and the loop's lag
  while SCIM users are created and while the daemon sweeps 1,000 tenants on moto;
- the daemon under load (scripts/bench_daemon.py): a change's latency during a full resync, a
  failing tenant's platform calls under repeated triggers, memory and sweep length with 10,000
  tenants, platform calls per tenant of a no-op resync sweep.

Prints one line per measurement; `--json` prints them as JSON for tracking over time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_daemon  # scripts/: the daemon under load
import yaml
from bench_replicas import bench_replicas, small_site  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS: dict[str, Any] = {}


COMMANDS = {
    "cli_help_startup": "python -m replicator --help (whole process, median)",
    "cli_validate": "scripts/bench.py --only validate_startup",
    "noop": "scripts/bench.py --only noop",
    "rate": "scripts/bench.py --only rate_converge (BENCH_RATE_TENANTS=1000)",
    "compile": "scripts/bench.py --only compile_scale",
    "core": "scripts/bench.py --only core",
    "moto": "scripts/bench.py --only moto",
    "replicas": "scripts/bench.py --only replicas (needs PostgreSQL)",
    "loop": "scripts/bench.py --only loop (BENCH_LOOP_USERS=10000 BENCH_LOOP_TENANTS=1000)",
    "daemon_change_latency": (
        "scripts/bench.py --only daemon_change_latency (BENCH_DAEMON_LATENCY_TENANTS=300)"
    ),
    "daemon_failing_tenant": "scripts/bench.py --only daemon_failing_tenant (BENCH_DAEMON_HEALTHY=20)",
    "daemon_many_tenants": "scripts/bench.py --only daemon_many_tenants (BENCH_DAEMON_MANY_TENANTS=10000)",
    "daemon_noop_sweep": "scripts/bench.py --only daemon_noop_sweep (BENCH_DAEMON_NOOP_TENANTS=50)",
    "scim_writes": "scripts/bench.py --only scim_writes (BENCH_SCIM_SIZES=10000,100000)",
    "scale": "scripts/bench.py --only scale (BENCH_SCALE_TENANTS=10000,100000; bench/generate.py)",
}
_CURRENT = ["core"]


FAILED: list[str] = []


def record(name: str, value: float | None, unit: str, note: str = "") -> None:
    """One row; ``value`` None for a row that was skipped or failed (the note says why)."""
    RESULTS[name] = {
        "value": None if value is None else round(value, 4),
        "unit": unit,
        "note": note,
        "command": COMMANDS[_CURRENT[0]],
    }
    shown = "-" if value is None else f"{value:.3f}"
    print(f"{name:<38} {shown:>10} {unit:<6} {note}", flush=True)


def bench_startup(runs: int = 7) -> None:
    exe = [sys.executable, "-m", "replicator", "--help"]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(exe, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    record("cli_help_startup", statistics.median(times), "s", f"median of {runs}")


def bench_validate_startup(runs: int = 7) -> None:
    """`replicator validate` on examples/demo as a whole process (no platform is contacted: the
    demo's @...@ placeholders are filled with fixed ids of the right shape)."""
    demo = ROOT / "examples" / "demo"
    with tempfile.TemporaryDirectory() as tmp:
        text = (demo / "replicator.yaml.in").read_text()
        for key, value in {
            "INVENTORY": str(demo / "inventory"),
            "IDENTITY_STORE_ID": "d-1234567890",
            "INSTANCE_ARN": "arn:aws:sso:::instance/ssoins-1234567890abcdef",
            "ENDPOINT_URL": "http://127.0.0.1:9",
            "PS_ADMIN": "arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-0000000000000001",
            "PS_POWER": "arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-0000000000000002",
            "PS_READ": "arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-0000000000000003",
        }.items():
            text = text.replace(f"@{key}@", value)
        config = Path(tmp) / "replicator.yaml"
        config.write_text(text)
        exe = [sys.executable, "-m", "replicator", "-c", str(config), "validate"]
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            out = subprocess.run(exe, capture_output=True, text=True, cwd=tmp)
            times.append(time.perf_counter() - t)
            if out.returncode != 0:
                raise RuntimeError(f"validate of the demo failed: {out.stdout}{out.stderr}")
    objects = sum(len(list(yaml.safe_load_all(f.read_text()))) for f in (demo / "inventory").glob("*.yaml"))
    record("cli_validate_demo", statistics.median(times), "s", f"median of {runs}, {objects} objects, exit 0")


def synthetic_site(
    root: Path,
    workspaces: int,
    projects: int,
    users: int,
    endpoint: str = "http://127.0.0.1:9",
    extra: dict[str, Any] | None = None,
    roles: dict[str, str] | None = None,
) -> Path:
    roles = roles or {r: f"arn:aws:sso:::permissionSet/ssoins-1/ps-{r}" for r in ("admin", "user", "reader")}
    docs: list[dict[str, Any]] = []
    docs += [
        {"kind": "meshUser", "metadata": {"name": f"u{i}"}, "spec": {"euid": f"user{i}"}}
        for i in range(users)
    ]
    for w in range(workspaces):
        docs.append({"kind": "meshWorkspace", "metadata": {"name": f"ws{w}"}})
        for p in range(projects):
            docs.append({"kind": "meshProject", "metadata": {"name": f"p{p}", "ownedByWorkspace": f"ws{w}"}})
            docs.append(
                {
                    "kind": "meshTenant",
                    "metadata": {
                        "ownedByWorkspace": f"ws{w}",
                        "ownedByProject": f"p{p}",
                        "platformIdentifier": "aws.b",
                    },
                    "spec": {"localId": f"{w:06d}{p:06d}", "landingZoneIdentifier": "lz"},
                }
            )
            for r, role in enumerate(("admin", "user", "reader")):
                members = [{"user": f"u{(w * 31 + p * 7 + r * 3 + k) % users}"} for k in range(2 + 3 * r)]
                docs.append(
                    {
                        "kind": "meshProjectBinding",
                        "metadata": {"ownedByWorkspace": f"ws{w}", "ownedByProject": f"p{p}"},
                        "spec": {"role": role, "subjects": members},
                    }
                )
    (root / "org.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    aws = {
        "region": "eu-central-1",
        "identityStoreId": "d-1",
        "instanceArn": "arn:aws:sso:::instance/ssoins-1",
        "endpointUrl": endpoint,
        "pollInterval": 0.01,
    }
    aws.update(extra or {})
    config = {
        "state": "sqlite:///state.db",
        "inventory": ["org.yaml"],
        "platforms": [{"identifier": "aws.b", "type": "aws", "aws": aws}],
        "landingZones": [
            {
                "identifier": "lz",
                "platform": "aws.b",
                "roleMappings": {
                    role: {"platformGroupAlias": role, "platformRoles": [arn]} for role, arn in roles.items()
                },
            }
        ],
    }
    (root / "replicator.yaml").write_text(yaml.safe_dump(config))
    return root / "replicator.yaml"


def _compile_one(tenants: int, repeat: int = 3) -> dict[str, float]:
    """In a fresh process: build an inventory of ``tenants`` tenants (10 bindings each, up to 100k
    users) as model objects, then compile it ``repeat`` times; time and peak RSS of each phase (the
    compile's best of ``repeat``: wall and CPU time, the CPU time being what the growth row uses,
    since other processes on a shared machine stretch wall time but not it)."""
    import gc
    import resource

    from platforms.aws import AwsDriver
    from replicator.core.compile import compile_all
    from replicator.core.config import Config
    from replicator.core.inventory import (
        Inventory,
        MeshProject,
        MeshProjectBinding,
        MeshTenant,
        MeshUser,
        MeshWorkspace,
    )

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    base = rss_mb()
    users = min(100_000, tenants * 10)
    per_ws = 100
    t = time.perf_counter()
    config = Config.model_validate(
        {
            "platforms": [{"identifier": "aws.b", "type": "aws", "euidPattern": "%s@example.com"}],
            "landingZones": [
                {
                    "identifier": "lz",
                    "platform": "aws.b",
                    "roleMappings": {
                        r: {"platformGroupAlias": r, "platformRoles": [f"arn:aws:sso:::permissionSet/i/{r}"]}
                        for r in ("admin", "user", "reader")
                    },
                }
            ],
        }
    )
    inv_users = {
        f"u{i}": MeshUser.model_validate(
            {"kind": "meshUser", "metadata": {"name": f"u{i}"}, "spec": {"euid": f"e{i}"}}
        )
        for i in range(users)
    }
    workspaces, projects, tenant_objs, bindings = {}, {}, {}, []
    for n in range(tenants):
        ws, pr = f"ws{n // per_ws}", f"p{n % per_ws}"
        if ws not in workspaces:
            workspaces[ws] = MeshWorkspace.model_validate({"kind": "meshWorkspace", "metadata": {"name": ws}})
        projects[(ws, pr)] = MeshProject.model_validate(
            {"kind": "meshProject", "metadata": {"name": pr, "ownedByWorkspace": ws}}
        )
        tenant = MeshTenant.model_validate(
            {
                "kind": "meshTenant",
                "metadata": {"ownedByWorkspace": ws, "ownedByProject": pr, "platformIdentifier": "aws.b"},
                "spec": {"localId": f"{n:012d}", "landingZoneIdentifier": "lz"},
            }
        )
        tenant_objs[tenant.key] = tenant
        for b in range(10):
            bindings.append(
                MeshProjectBinding.model_validate(
                    {
                        "kind": "meshProjectBinding",
                        "metadata": {"ownedByWorkspace": ws, "ownedByProject": pr},
                        "spec": {
                            "role": ("admin", "user", "reader")[b % 3],
                            "subjects": [{"user": f"u{(n * 10 + b) % users}"}],
                        },
                    }
                )
            )
    inventory = Inventory(
        users=inv_users,
        workspaces=workspaces,
        projects=projects,
        bindings=tuple(bindings),
        tenants=tenant_objs,
    )
    build_s, build_mb = time.perf_counter() - t, rss_mb() - base
    # A full collection before each compile, so that the compile phase pays for its own objects
    # only: without it the first full collection the inventory build made due lands inside compile
    # and charges it a traversal of the whole inventory (1.2 s of 3.3 s at 10k tenants). Its cost
    # is counted in the build, whose objects it traverses.
    t0 = time.perf_counter()
    gc.collect()
    build_s += time.perf_counter() - t0
    caps = {"aws.b": AwsDriver.capabilities}
    now = datetime.now(UTC)
    before = rss_mb()
    walls, cpus, compile_mb = [], [], 0.0
    for run in range(repeat):
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        desired = compile_all(config, inventory, caps, now)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        assert len(desired) == tenants
        if run == 0:
            compile_mb = rss_mb() - before
        del desired
    # The work itself, exactly: Python function calls of one more compile under cProfile (time on
    # a shared machine also depends on what else fills the CPU caches; this count does not).
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.runcall(compile_all, config, inventory, caps, now)
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return {
        "build_s": build_s,
        "build_mb": build_mb,
        "compile_s": min(walls),
        "compile_cpu_s": min(cpus),
        "compile_mb": compile_mb,
        "compile_calls": calls,
    }


def bench_compile_scale(sizes: tuple[int, ...] = (1_000, 10_000, 100_000), rounds: int = 3) -> None:
    """Compile throughput at growing sizes, each in fresh processes (clean peak memory). The same
    compile in two processes on this machine can differ by 1.8x in CPU time (other guests on the
    host), so every size runs once per round, the sizes interleaved so that a slow spell of the
    host falls on all of them, and each size's best round is kept. ``PYTHONHASHSEED=0`` makes the
    call counts repeatable (set iteration order decides how often sorting compares)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            argv = [sys.executable, __file__, "--compile-one", str(n)]
            out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    per_tenant, calls_per_tenant, build_per_tenant = [], [], []
    for n in sizes:
        r = min(runs[n], key=lambda run: run["compile_cpu_s"])
        build_s = min(run["build_s"] for run in runs[n])
        note = (
            f"best of 3 compiles in each of {rounds} processes, {r['compile_cpu_s']:.3f} s CPU, "
            f"{r['compile_cpu_s'] / n * 1e6:.0f} us CPU per tenant, {r['compile_calls'] / n:.1f} Python "
            f"calls per tenant, +{r['compile_mb']:.0f} MB peak RSS, 10 bindings each"
        )
        record(f"compile_{n}_tenants", r["compile_s"], "s", note)
        note = f"+{r['build_mb']:.0f} MB (model objects, no YAML), {build_s / n * 1e6:.0f} us per tenant"
        record(f"inventory_{n}_tenants", build_s, "s", note)
        per_tenant.append(r["compile_cpu_s"] / n)
        calls_per_tenant.append(r["compile_calls"] / n)
        build_per_tenant.append(build_s / n)
    record(
        "compile_growth",
        per_tenant[-1] / per_tenant[0],
        "x",
        f"CPU time per tenant at {sizes[-1]} vs {sizes[0]} tenants (1.0 = linear); Python calls "
        f"per tenant (exact) {calls_per_tenant[-1] / calls_per_tenant[0]:.3f}x",
    )
    record(
        "inventory_growth",
        build_per_tenant[-1] / build_per_tenant[0],
        "x",
        f"wall time per tenant of the model build at {sizes[-1]} vs {sizes[0]} tenants (1.0 = linear)",
    )


def bench_core(tenants_per_ws: int = 50, workspaces: int = 20, users: int = 5000) -> None:
    from platforms.contract import ObservedTenant, PlatformUser
    from replicator.core.compile import compile_all
    from replicator.core.plan import GrantPolicy, Guard, plan_tenant
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate

    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_site(Path(tmp), workspaces, tenants_per_ws, users)
        t = time.perf_counter()
        loaded = load(path)
        record("load_yaml", time.perf_counter() - t, "s", f"{len(loaded.objects)} objects")
        t = time.perf_counter()
        v = validate(loaded)
        record("validate", time.perf_counter() - t, "s", f"{len(v.inventory.tenants)} tenants")
    now = datetime.now(UTC)
    t = time.perf_counter()
    desired = compile_all(v.config, v.inventory, v.capabilities, now)
    record("compile", time.perf_counter() - t, "s", f"{len(desired)} tenants")
    lookups = {
        m.platform_euid: (PlatformUser(m.platform_euid, m.platform_euid),)
        for d in desired.values()
        for g in d.groups
        for m in g.members
    }
    t = time.perf_counter()
    changes = 0
    for d in desired.values():
        changes += len(plan_tenant(d, lookups, ObservedTenant(), (), GrantPolicy("keep"), Guard(10)).changes)
    record("plan_fresh", time.perf_counter() - t, "s", f"{changes} changes")


def bench_moto(tenants: int = 20) -> None:
    from platforms.aws import AwsDriver
    from replicator.engine.runner import Engine, default_driver
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate
    from state import Store
    from tests.support.moto_aws import MotoAws

    with MotoAws() as aws, tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        for i in range(200):
            aws.create_user(f"user{i}")
        roles = {r: aws.create_permission_set(r) for r in ("admin", "user", "reader")}
        path = synthetic_site(
            Path(tmp),
            1,
            tenants,
            200,
            aws.url,
            {"identityStoreId": aws.identity_store_id, "instanceArn": aws.instance_arn},
            roles,
        )
        v = validate(load(path))
        drivers: list[AwsDriver] = []

        def capture(platform: Any) -> Any:
            d = default_driver(platform)
            drivers.append(d)  # type: ignore[arg-type]
            return d

        store = Store(f"sqlite:///{Path(tmp) / 'state.db'}")
        engine = Engine(v, store, make_driver=capture)
        now = datetime.now(UTC)
        selected = engine.select(now)
        t = time.perf_counter()
        report = asyncio.run(engine.run(selected, apply=True, now=now))
        applied = sum(r.applied for r in report.results)
        record(
            "moto_reconcile_fresh",
            time.perf_counter() - t,
            "s",
            f"{tenants} tenants, {applied} changes, {len(report.failed)} failed",
        )
        t = time.perf_counter()
        report = asyncio.run(engine.run(selected, apply=True, now=now))
        elapsed = time.perf_counter() - t
        calls = sum(drivers[-1].api_calls.values())
        record("moto_reconcile_noop", elapsed, "s", f"{tenants} tenants, {calls} AWS calls")
        ops = ", ".join(f"{op} {n}" for op, n in sorted(drivers[-1].api_calls.items()))
        writes = [op for op in drivers[-1].api_calls if op.split("_")[0] in ("create", "delete")]
        if writes or sum(r.applied for r in report.results):
            raise RuntimeError(f"a no-op run wrote: {writes}")
        record(
            "aws_calls_per_noop_tenant",
            calls / tenants,
            "calls",
            f"3 groups per tenant, one run of all tenants (ListGroups scan); lower bound 6, "
            f"ratio {calls / tenants / 6:.2f}; 9 before the scan; writes 0 (asserted); {ops}",
        )
        store.close()


NOOP_PLATFORMS = (
    "aws",
    "aws_scan",
    "openstack",
    "openstack_scan",
    "kubernetes",
    "azure",
    "gcp",
    "gcp_scan",
    "cloudfoundry",
)


def bench_noop() -> None:
    """No-op reconcile cost per platform: scripts/bench_noop.py under pytest (it reuses the
    end-to-end tests' fixtures and local servers); one row per platform, a row saying "skipped"
    or "FAILED" (with the reason) when the backend is unavailable or a no-op run wrote."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        out, junit = Path(tmp) / "noop.jsonl", Path(tmp) / "junit.xml"
        env = {**os.environ, "BENCH_NOOP_OUT": str(out)}
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        argv += ["-W", "ignore::DeprecationWarning", str(ROOT / "scripts" / "bench_noop.py")]
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        rows = {}
        if out.exists():
            rows = {r["platform"]: r for r in map(json.loads, out.read_text().splitlines())}
        reasons: dict[str, str] = {}
        if junit.exists():
            for case in ET.parse(junit).iter("testcase"):
                platform = case.get("name", "").removeprefix("test_")
                for child in case:
                    message = (child.get("message") or child.text or "").strip().splitlines()
                    text = message[0] if message else child.tag
                    if child.tag == "skipped":
                        reasons[platform] = f"skipped: {text}"
                    elif child.tag in ("failure", "error"):
                        reasons[platform] = f"FAILED: {text}"
    for platform in NOOP_PLATFORMS:
        name = f"noop_{platform}_calls_per_tenant"
        r = rows.get(platform)
        if r is None:
            reason = reasons.get(platform, f"no result (pytest exit {proc.returncode})")
            if not reason.startswith("skipped"):
                if not any(f.startswith("noop_") for f in FAILED):
                    print(proc.stdout[-4000:], file=sys.stderr)
                FAILED.append(f"{name}: {reason}")
            record(name, None, "calls", reason)
            continue
        ops = ", ".join(f"{op} {n}" for op, n in sorted(r["by_operation"].items()))
        per_run = f"; + {r['per_run_calls']} per run (token)" if r["per_run_calls"] else ""
        server = "" if r["server_requests"] is None else f"; server/proxy saw {r['server_requests']}"
        note = (
            f"lower bound {r['lower_bound_per_tenant']:g}, ratio {r['ratio']:.2f}, writes 0 (asserted); "
            f"{r['tenants']} tenants, {r['groups']} owned groups; {ops}{per_run}{server}"
        )
        if platform.endswith("_scan"):
            note += f"; groupScanThreshold {r['groups']} (the run's groups): one group list per run"
        elif platform in ("aws", "openstack", "gcp"):
            note += (
                "; below groupScanThreshold (20 by default, as when the daemon runs one tenant): "
                "read group by group"
            )
        record(name, r["calls_per_tenant"], "calls", note)
        daemon = rows.get(f"daemon_{platform}")
        if daemon is not None:
            engine, bound = daemon["engine_calls_per_tenant"], daemon["lower_bound_per_tenant"]
            ops = ", ".join(f"{op} {n}" for op, n in sorted(daemon["by_operation"].items()))
            record(
                f"noop_daemon_{platform}_calls_per_tenant",
                daemon["calls_per_tenant"],
                "calls",
                f"the daemon's full resync of the same converged tenants ({daemon['tenants']}, "
                f"{daemon['runs']} engine run(s)) after its start-up pass: "
                f"{daemon['calls_per_tenant'] / engine:.2f}x reconcile --all ({engine:g}), "
                f"{daemon['calls_per_tenant'] / bound:.2f}x the lower bound ({bound:g}); writes 0 "
                f"(asserted); {ops}",
            )


def bench_rate_converge(tenants: int = 1000, rate: float = 20.0, fault_rate: float = 0.02) -> None:
    """1,000 small tenants (one binding of one user: one group, one member, one permission set)
    from empty against moto behind the fault proxy, which answers a share of requests with 429 and
    Retry-After (0 or 1 s); the engine shares one budget of ``rate`` requests/s (the daemon's
    ``schedule.rateLimits`` Budget, Identity Center's documented quota). Runs until a following
    plan shows 0 changes; wall time next to (requests / rate)."""
    from replicator.engine.runner import Engine, default_driver
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate
    from replicator.service.budgets import Budget
    from state import Store
    from tests.support.faults import FaultProxy
    from tests.support.moto_aws import MotoAws

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with MotoAws() as aws, tempfile.TemporaryDirectory() as tmp:
        aws.reset()
        users = 50
        for i in range(users):
            aws.create_user(f"user{i}")
        roles = {"user": aws.create_permission_set("user")}
        with FaultProxy(aws.url, rate=fault_rate, seed=10, faults={"429": 1}) as proxy:
            root = Path(tmp)
            ids = {"identityStoreId": aws.identity_store_id, "instanceArn": aws.instance_arn}
            ids["maxAttempts"] = 8
            schedule = {"rateLimits": {"aws.b": rate}, "concurrency": {"aws.b": 8}}
            path = small_site(root, tenants, users, proxy.url, ids, roles["user"], schedule=schedule)
            v = validate(load(path))
            budget = [Budget(rate)]

            def make(platform: Any) -> Any:
                driver = default_driver(platform)
                driver.budget = budget[0]
                return driver

            store = Store(f"sqlite:///{root / 'state.db'}")
            engine = Engine(v, store, make_driver=make)
            runs = 0
            t = time.perf_counter()
            while True:
                now = datetime.now(UTC)
                budget[0] = Budget(rate)  # a budget's lock belongs to one event loop
                report = asyncio.run(engine.run(engine.select(now), apply=True, now=now))
                runs += 1
                if not report.failed:
                    break
                if runs >= 5:
                    raise RuntimeError(f"{len(report.failed)} tenants still failing after {runs} runs")
            elapsed = time.perf_counter() - t
            applied = sum(r.applied for r in report.results)
            requests = len(proxy.log)
            throttled = proxy.counts["429"]
            proxy.rate = 0.0
            budget[0] = Budget(rate)
            now = datetime.now(UTC)
            check = asyncio.run(engine.run(engine.select(now), apply=False, now=now))
            if check.pending or check.failed:
                raise RuntimeError(f"not converged: the following plan has {check.pending} changes")
            store.close()
    floor = requests / rate
    shape = f"{tenants} tenants x 1 group, 1 member, 1 permission set"
    record("rate_converge_wall", elapsed, "s", f"{shape}; {runs} run(s), {applied} changes in the last")
    record("rate_converge_requests", requests, "calls", "every request the proxy saw, 429s included")
    record("rate_converge_floor", floor, "s", f"requests / {rate:g} req/s")
    record("rate_converge_ratio", elapsed / floor, "x", "wall time / floor (1.0 = at the quota)")
    record(
        "rate_converge_429",
        throttled,
        "429s",
        f"injected at {fault_rate:.0%} with Retry-After 0-1 s, all retried",
    )


def write_results(path: Path) -> None:
    """bench/results.md (a table, with the command that reproduces each row) and results.json."""
    path.mkdir(exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    for r in RESULTS.values():
        r["measured"] = stamp
    rows = dict(RESULTS)
    previous = path / "results.json"
    if previous.exists():  # an --only run keeps the other rows of the last run, with their date
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            old = {}
        rows = {**{k: v for k, v in old.items() if k not in RESULTS}, **RESULTS}
        order = [k for k in old if k in rows] + [k for k in RESULTS if k not in old]
        rows = {k: rows[k] for k in order}
    (path / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {stamp} ({os.cpu_count()} CPUs, Python {sys.version.split()[0]}).",
        "",
        "Rows not measured by the last run (`--only`) keep their values from an earlier one; the",
        "`measured` column says when each row was taken. Call counts are exact; wall times on this",
        "machine are noisy (2 CPUs shared with other work).",
        "",
        "| measurement | value | unit | note | reproduce | measured |",
        "|---|---:|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {'-' if r['value'] is None else format(r['value'], 'g')} | {r['unit']} "
        f"| {r['note']} | `{r['command']}` | {r.get('measured', '-')} |"
        for name, r in rows.items()
    ]
    (path / "results.md").write_text("\n".join(lines) + "\n")


BENCHES = {
    "startup": lambda: bench_startup(),
    "validate_startup": lambda: bench_validate_startup(),
    "noop": lambda: bench_noop(),
    "compile_scale": lambda: bench_compile_scale(),
    "core": lambda: bench_core(),
    "moto": lambda: bench_moto(),
    "rate_converge": lambda: bench_rate_converge(int(os.environ.get("BENCH_RATE_TENANTS", "1000"))),
    "replicas": lambda: bench_replicas(
        record,
        int(os.environ.get("BENCH_REPLICAS_TENANTS", "80")),
        float(os.environ.get("BENCH_REPLICAS_QUOTA", "10")),
    ),
    "loop": lambda: __import__("bench_loop").bench_loop(record),
    "daemon_change_latency": lambda: bench_daemon.bench_change_latency(record, synthetic_site),
    "daemon_failing_tenant": lambda: bench_daemon.bench_failing_tenant(record, synthetic_site),
    "daemon_many_tenants": lambda: bench_daemon.bench_many_tenants(record, synthetic_site),
    "daemon_noop_sweep": lambda: bench_daemon.bench_noop_sweep(record, synthetic_site),
    "scim_writes": lambda: __import__("bench_scim").bench_scim_writes(record),
    "scale": lambda: __import__("bench_scale").bench_scale(record),
}
_SECTION = {
    "startup": "cli_help_startup",
    "validate_startup": "cli_validate",
    "rate_converge": "rate",
    "noop": "noop",
    "compile_scale": "compile",
    "core": "core",
    "moto": "moto",
    "loop": "loop",
    "scim_writes": "scim_writes",
    "scale": "scale",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--only", action="append", choices=sorted(BENCHES), help="run only these")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where results.md/json go")
    parser.add_argument("--compile-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_one:
        print(json.dumps(_compile_one(args.compile_one)))
        return
    from replicator import logs

    logs.configure("console", "warning")
    for name in args.only or list(BENCHES):
        _CURRENT[0] = _SECTION.get(name, name)
        BENCHES[name]()
    write_results(args.out)
    print(f"results written to {args.out / 'results.md'}")
    if args.json:
        print(json.dumps(RESULTS, indent=2))
    if FAILED:
        print("BENCH FAILED:\n  " + "\n  ".join(FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
