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
