"""`make bench`, the inventory at scale (`scripts/bench.py --only scale`): load + validate +
compile of a synthetic organisation (bench/generate.py) in a fresh process per size, with the wall
and CPU time of each phase and the process's peak resident memory. The sizes are
``BENCH_SCALE_TENANTS`` (default 10000,100000; users twice the tenants, ten bindings per tenant).

    python scripts/bench_scale.py --one /tmp/org/replicator.yaml     # one measurement, as JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
Record = Callable[[str, float | None, str, str], None]


def measure(config: Path) -> dict[str, float]:
    """In this process: each phase's wall and CPU seconds, and the peak RSS in MB at the end."""
    import resource
    from datetime import UTC, datetime

    sys.path.insert(0, str(ROOT))
    from replicator.core.compile import compile_all
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate
    from replicator.memory import bulk

    out: dict[str, float] = {}

    def phase(name: str, run: Callable[[], object]) -> object:
        wall, cpu = time.perf_counter(), time.process_time()
        value = run()
        out[f"{name}_s"] = time.perf_counter() - wall
        out[f"{name}_cpu_s"] = time.process_time() - cpu
        return value

    loaded = phase("load", lambda: load(config))
    v = phase("validate", lambda: validate(loaded))  # type: ignore[arg-type]
    now = datetime.now(UTC)
    with bulk():  # as the runner compiles
        desired = phase("compile", lambda: compile_all(v.config, v.inventory, v.capabilities, now))  # type: ignore[attr-defined]
    out["tenants"] = float(len(desired))  # type: ignore[arg-type]
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del desired
    reload(config, loaded, v, now, phase)  # type: ignore[arg-type]
    out["reload_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def reload(
    config: Path, loaded: Any, v: Any, now: Any, phase: Callable[[str, Callable[[], object]], object]
) -> None:
    """The daemon after an edit of one binding (its role, in one file of the inventory): that
    file parsed again (the others reused), the inventory validated and indexed, and only the
    tenants the change touches compiled again and compared."""
    from replicator.inputs.loader import changed_objects, load
    from replicator.inputs.validate import validate
    from replicator.memory import bulk
    from replicator.service.reload import changed_tenants

    with bulk():  # as the daemon's reload builds them
        v.inventory.build_indexes()
    files = sorted((config.parent / "inventory").glob("org-*.yaml"))
    edited = files[len(files) // 2]
    text = edited.read_text()
    edited.write_text(text.replace("  role: reader\n", "  role: user\n", 1))
    try:
        again = phase("reload_load", lambda: load(config, previous=loaded))
        v2: Any = phase("reload_validate", lambda: validate(again))  # type: ignore[arg-type]
        with bulk():
            phase("reload_index", v2.inventory.build_indexes)
        changed: Any = phase(
            "recompile", lambda: changed_tenants(v, v2, now, changed_objects(loaded, again))
        )
    finally:
        edited.write_text(text)
    assert len(changed) == 1, changed  # the one tenant whose binding changed


def bench_scale(record: Record) -> None:
    import importlib.util

    # By path: scripts/bench.py is the module `bench` in this process, not the bench/ folder.
    spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "bench" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generate = module.generate

    sizes = [int(n) for n in os.environ.get("BENCH_SCALE_TENANTS", "10000,100000").split(",")]
    per_tenant: list[float] = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{n}-") as tmp:
            config = generate(Path(tmp), n)
            argv = [sys.executable, __file__, "--one", str(config)]
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            run = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
            r = json.loads(run.stdout.strip().splitlines()[-1])
        total = r["load_s"] + r["validate_s"] + r["compile_s"]
        cpu = r["load_cpu_s"] + r["validate_cpu_s"] + r["compile_cpu_s"]
        per_tenant.append(cpu / n)
        reload_total = r["reload_load_s"] + r["reload_validate_s"] + r["reload_index_s"] + r["recompile_s"]
        record(
            f"scale_{n}_recompile_one_binding",
            r["recompile_s"] * 1000,
            "ms",
            f"the daemon after one binding changed: the tenants it touches found and compiled again "
            f"(1 of {n}); the reload around it {reload_total:.1f} s (the changed file parsed "
            f"{r['reload_load_s']:.1f} s, validate {r['reload_validate_s']:.1f} s, index "
            f"{r['reload_index_s']:.1f} s), peak {r['reload_peak_mb']:.0f} MB with both inventories",
        )
        record(
            f"scale_{n}_tenants",
            total,
            "s",
            f"load {r['load_s']:.1f} s, validate {r['validate_s']:.1f} s, compile {r['compile_s']:.1f} s "
            f"({cpu:.1f} s CPU); peak {r['peak_mb']:.0f} MB resident; {n} tenants, {2 * n} users, "
            f"{10 * n} bindings (bench/generate.py)",
        )
    if len(sizes) > 1:
        record(
            "scale_growth",
            per_tenant[-1] / per_tenant[0],
            "x",
            f"CPU time per tenant of load + validate + compile at {sizes[-1]} vs {sizes[0]} tenants "
            "(1.0 = linear)",
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(Path(sys.argv[2]))))
