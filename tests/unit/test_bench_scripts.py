"""`make bench` reuses the end-to-end tests' fixtures (scripts/bench_noop.py runs under pytest): a
fixture moved or renamed in tests/ must not leave the benchmark unable to start, which only a run
of `make bench` would otherwise show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_noop_benchmark_collects_one_row_per_measurement() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "scripts/bench_noop.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 tests collected" in done.stdout, done.stdout


def test_the_synthetic_organisation_is_seeded_valid_and_shaped_as_documented(tmp_path: Path) -> None:
    """bench/generate.py: the same seed gives the same files; the inventory validates; 10 bindings
    a tenant, twice as many users as tenants, files of at most 1,000 projects; and the scale
    benchmark measures it in a process of its own."""
    import json

    sys.path.insert(0, str(ROOT))
    from bench.generate import generate
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate

    first = generate(tmp_path / "a", 1_050)
    again = generate(tmp_path / "b", 1_050)
    for path in sorted((tmp_path / "a" / "inventory").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / "inventory" / path.name).read_bytes(), path.name
    assert sorted(p.name for p in (tmp_path / "a" / "inventory").iterdir()) == [
        "groups.yaml", "org-0000.yaml", "org-0001.yaml", "users.yaml",
    ]  # fmt: skip
    v = validate(load(first))
    inv = v.inventory
    assert (len(inv.tenants), len(inv.users), len(inv.bindings)) == (1_050, 2_100, 10_500)
    assert len(inv.groups) == 21
    zones = {t.spec.landing_zone_identifier for t in inv.tenants.values()}
    assert zones == {"lz-prod", "lz-dev", "lz-sandbox"}
    # Popular users are bound in many projects, most in few (Zipf).
    counts: dict[str, int] = {}
    for b in inv.bindings:
        for s in b.spec.subjects:
            user = getattr(s, "user", None)  # or a group subject
            if user:
                counts[user] = counts.get(user, 0) + 1
    ranked = sorted(counts.values(), reverse=True)
    assert ranked[0] > 20 * ranked[len(ranked) // 2]
    assert again.exists()

    out = subprocess.run(
        [sys.executable, "scripts/bench_scale.py", "--one", str(first)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["tenants"] == 1_050
    assert measured["peak_mb"] > 0
