"""The secret hygiene plugin (tests/conftest.py): the values it searches for are the ones the suite
really uses, and a run that leaks one fails, naming the test and the secret but never the value."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest as hygiene

REPO = Path(__file__).resolve().parents[1]


def test_the_values_are_the_ones_the_suite_uses() -> None:
    from tests.support import azure_server, cf_server, keystone, moto_aws, slapd

    values = set(hygiene.SECRETS.values())
    assert keystone.ADMIN_PASSWORD in values
    assert cf_server.CLIENT_SECRET in values
    assert azure_server.CLIENT_SECRET in values
    assert azure_server.MSI_HEADER in values
    assert slapd.ROOT_PASSWORD in values
    assert slapd.READER_PASSWORD in values
    assert moto_aws.SECRET_ACCESS_KEY in hygiene.TOO_GENERIC.values()
    sources = {
        "tests/e2e/test_daemon.py": ['"read-key-value"', '"write-key-value"'],
        "tests/integration/test_aws_driver.py": ['"Sup3rS3cretValue"'],
        "tests/integration/test_gcp_driver.py": ["s3cr3t-key-material"],
        "tests/support/scim_served.py": ['"scim-bearer-for-tests-5d1c"'],
        "tests/integration/test_objects_api.py": ['"objects-api-read-key"', '"objects-api-write-key"'],
    }
    for path, needles in sources.items():
        text = (REPO / path).read_text()
        assert all(n in text for n in needles), f"{path} no longer uses {needles}: update tests/conftest.py"


def test_every_searched_value_is_distinctive() -> None:
    for name, value in hygiene.SECRETS.items():
        assert len(value) >= 12, name
        assert value not in {"testing", "password", "secret"}, name
    assert hygiene.find_secrets("nothing to see here, testing 1 2 3") == []


INNER = """
import pytest

CF = "s3cret" + "-for-tests"
AZ = "local-test" + "-secret"


def test_prints_a_secret():
    print("token request with client_secret=" + CF)


def test_writes_a_secret_to_a_log_file(tmp_path):
    (tmp_path / "daemon.log").write_text("authorization: " + AZ + "\\n")


def test_clean(capsys):
    print("nothing secret")
"""


def run_inner(tmp_path: Path, *select: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "inner").mkdir(exist_ok=True)
    (tmp_path / "inner" / "test_inner.py").write_text(INNER)
    basetemp = tmp_path / "inner-tmp"
    try:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "tests.conftest",
                "-p",
                "no:cacheprovider",
                "-c",
                os.devnull,
                "--rootdir",
                str(tmp_path / "inner"),
                f"--basetemp={basetemp}",
                "-q",
                *[f"{tmp_path / 'inner' / 'test_inner.py'}::{s}" for s in select],
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        # the inner run's leaking log file must not be found again by this session's own scan
        shutil.rmtree(basetemp, ignore_errors=True)


@pytest.mark.parametrize(
    ("test", "secret", "stream"),
    [
        ("test_prints_a_secret", "cloud foundry client secret", "stdout of"),
        ("test_writes_a_secret_to_a_log_file", "azure client secret", "file of"),
    ],
)
def test_a_leak_fails_the_run_and_names_it(tmp_path: Path, test: str, secret: str, stream: str) -> None:
    result = run_inner(tmp_path, test, "test_clean")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "2 passed" in out
    leaks = [line for line in out.splitlines() if line.startswith("SECRET LEAKED:")]
    assert len(leaks) == 1, out
    assert secret in leaks[0]
    assert stream in leaks[0]
    if stream == "stdout of":
        assert "test_inner.py::test_prints_a_secret (call)" in leaks[0]
    else:
        assert "daemon.log" in leaks[0]
    assert "s3cret-for-tests" not in out
    assert "local-test-secret" not in out


def test_a_clean_run_passes(tmp_path: Path) -> None:
    result = run_inner(tmp_path, "test_clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SECRET LEAKED" not in result.stdout
