"""The example CI workflow (examples/ci/access.yml) is run, step script by step script, with bash and
the real `replicator` against moto: the pull-request plan, its exit-code handling, and the apply
on merge. So the example cannot rot into something that does not work."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replicator.cli.parser import build_parser
from tests.e2e.conftest import Project, standard_inventory

WORKFLOW = Path(__file__).parents[2] / "examples" / "ci" / "access.yml"


def steps(job: str) -> dict[str, str]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    return {s["name"]: s["run"] for s in doc["jobs"][job]["steps"] if "name" in s and "run" in s}


def run_step(script: str, cwd: Path, path_dir: Path | None = None) -> tuple[int, dict[str, str]]:
    out_file = cwd / "github_output"
    out_file.write_text("")
    env = {
        **os.environ,
        "GITHUB_OUTPUT": str(out_file),
        "PATH": f"{path_dir or Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("REPLICATOR_CONFIG", None)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if "=" in line)
    return done.returncode, outputs


def test_every_replicator_command_in_the_workflow_parses() -> None:
    text = WORKFLOW.read_text()
    # Command lines: in a `run:`, a script line, or a commented-out alternative.
    commands = re.findall(r"(?m)^\s*(?:#\s*|run:\s*)?(replicator [a-z]+\b[^>\n|]*)", text)
    assert sorted(c.split()[1] for c in commands) == ["apply", "plan", "plan", "validate"]
    for command in commands:
        argv = shlex.split(command)[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:  # argparse's way of refusing
            pytest.fail(f"{command!r} does not parse (exit {e.code})")


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (2, 0), (1, 1), (3, 3)])
def test_the_plan_step_passes_exit_codes_through(tmp_path: Path, code: int, expected: int) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "replicator").write_text(f"#!/bin/sh\necho 'Plan: fake'\nexit {code}\n")
    (fake / "replicator").chmod(0o755)
    got, outputs = run_step(steps("plan")["plan"], tmp_path, fake)
    assert got == expected
    assert outputs["exitcode"] == str(code)
    assert (tmp_path / "plan.txt").read_text() == "Plan: fake\n"


def converged(proj: Project) -> bool:
    return proj.cli("plan", "--detailed-exitcode").code == 0


def test_plan_on_the_pull_request_then_apply_on_merge(proj: Project) -> None:
    code, outputs = run_step(steps("plan")["plan"], proj.root)
    assert code == 0
    assert outputs["exitcode"] == "2"
    assert "+ create group mst-finance.ledger-admin" in (proj.root / "plan.txt").read_text()
    assert proj.aws.groups() == {}

    code, _ = run_step(steps("apply")["apply"], proj.root)
    assert code == 0
    assert proj.member_names("mst-finance.ledger-user") == ["bob", "carol"]
    assert converged(proj)


def test_a_merge_that_changed_the_inputs_fails_the_apply_job(proj: Project) -> None:
    code, _ = run_step(steps("plan")["plan"], proj.root)
    assert code == 0
    # Another pull request merged first and changed the same project's bindings.
    proj.write_inventory(standard_inventory(admin=("alice", "erin"), user=("bob", "carol"), reader=("dave",)))
    code, _ = run_step(steps("apply")["apply"], proj.root)
    assert code == 1
    assert proj.aws.groups() == {}


def test_invalid_input_fails_the_validate_step(proj: Project) -> None:
    (proj.root / "inventory" / "broken.yaml").write_text("kind: meshNothing\n")
    code, _ = run_step(steps("plan")["validate"], proj.root)
    assert code == 1
