"""The environment the suite runs in is the one uv.lock describes: what CI tested is what a fresh
clone, the container image and every developer install (`make install` runs `uv sync --locked`).

`make test-latest` deselects the first test on purpose: it runs the suite on the newest versions
pyproject.toml allows, which is the point of that job."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, Any]:
    return tomllib.loads(LOCK.read_text())


def test_installed_versions_are_the_locked_ones() -> None:
    locked: dict[str, set[str]] = {}
    for package in _lock()["package"]:
        locked.setdefault(_normalize(package["name"]), set()).add(package["version"])
    installed = {_normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}
    assert "replicator" in installed, "the project itself is not installed: run `make install`"
    unlocked = sorted(name for name in installed if name not in locked)
    assert not unlocked, f"installed but not in uv.lock: {unlocked}"
    drifted = {n: (v, sorted(locked[n])) for n, v in installed.items() if v not in locked[n]}
    assert not drifted, f"installed versions that uv.lock does not hold (installed, locked): {drifted}"


def test_every_locked_download_has_a_hash() -> None:
    """uv checks each file it downloads against the lock's hash; a file without one would be taken
    on trust."""
    missing = []
    for package in _lock()["package"]:
        files = list(package.get("wheels", []))
        if "sdist" in package:
            files.append(package["sdist"])
        unhashed = [f for f in files if not f.get("hash", "").startswith("sha256:")]
        missing += [f"{package['name']} {f.get('url')}" for f in unhashed]
    assert not missing, missing


def test_lock_holds_every_extra_of_the_project() -> None:
    """The lock was made from this pyproject.toml: every extra it declares is resolved (`uv sync
    --locked` refuses a stale lock too; this says which part is stale)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (project,) = [p for p in _lock()["package"] if p["name"] == "replicator"]
    assert set(project.get("optional-dependencies", {})) == set(pyproject["project"]["optional-dependencies"])


def test_uv_itself_is_pinned_with_hashes() -> None:
    text = (ROOT / "requirements" / "uv.txt").read_text()
    (pin,) = re.findall(r"^uv==(\S+)", text, flags=re.M)
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 1
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["required-version"] == f"=={pin}"


def test_github_workflow_runs_the_locked_suite_and_a_scheduled_latest_one() -> None:
    """CI on GitHub: every push runs `make test` (the README's command, from the lock); a scheduled
    job runs `make test-latest`, so a new release that breaks us fails a job, not a fresh clone."""
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["schedule"]
    assert "push" in triggers
    runs = {name: [s.get("run") for s in job["steps"]] for name, job in workflow["jobs"].items()}
    assert "make test" in runs["test"]
    assert "make test-latest" in runs["latest"]
    assert "schedule" in workflow["jobs"]["latest"]["if"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-latest:", makefile, flags=re.M)
    assert re.search(r"^lock:", makefile, flags=re.M)
    assert "--deselect tests/unit/test_locked.py::test_installed_versions_are_the_locked_ones" in makefile
