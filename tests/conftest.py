"""Secret hygiene for the whole suite (a pytest plugin; tests/test_secret_hygiene.py tests it).

The suite runs with known credential values (below, copied from the test servers and tests that
use them; tests/test_secret_hygiene.py checks the copies against their sources). Every test's
captured stdout, stderr and log (``pytest_runtest_logreport``) is searched for them, and at the end
of the session so are the log files tests left in the session's temporary folder (``*.log``,
``*.out``, ``*.err``: subprocess and daemon logs written with ``stdout=file``). A hit fails the run
with a message naming the test (or file) and the secret's name, never its value.

Values too generic to search for are not listed: moto's dummy credentials are ``testing``, a word
that appears in ordinary output; the longer ``Sup3rS3cretValue`` that tests/integration/
test_aws_driver.py puts in ``AWS_SECRET_ACCESS_KEY`` stands for the AWS secret instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.sessions import azure_server, gcp_session, moto_server  # noqa: F401 - one per session

SECRETS: dict[str, str] = {
    "keystone admin password (tests/support/keystone.py ADMIN_PASSWORD)": "replicator-test-admin",
    "daemon API read key (tests/e2e/test_daemon.py READ)": "read-key-value",
    "daemon API write key (tests/e2e/test_daemon.py WRITE)": "write-key-value",
    "cloud foundry client secret (tests/support/cf_server.py CLIENT_SECRET)": "s3cret-for-tests",
    "azure client secret (tests/support/azure_server.py CLIENT_SECRET)": "local-test-secret",
    "azure managed identity header (tests/support/azure_server.py MSI_HEADER)": "local-identity-header",
    "aws secret access key (tests/integration/test_aws_driver.py)": "Sup3rS3cretValue",
    "gcp private key material (tests/integration/test_gcp_driver.py)": "s3cr3t-key-material",
    "slapd root password (tests/support/slapd.py ROOT_PASSWORD)": "slapd-root-secret-for-tests",
    "ldap bind password (tests/support/slapd.py READER_PASSWORD)": "ldap-reader-secret-for-tests",
    "scim bearer token (tests/support/scim_served.py TOKEN)": "scim-bearer-for-tests-5d1c",
    "object API read key (tests/integration/test_objects_api.py READ_KEY)": "objects-api-read-key",
    "object API write key (tests/integration/test_objects_api.py WRITE_KEY)": "objects-api-write-key",
}
"""name -> value of every credential the suite uses that is distinctive enough to search for."""

TOO_GENERIC: dict[str, str] = {
    "moto dummy AWS credentials (tests/support/moto_aws.py ACCESS_KEY_ID, SECRET_ACCESS_KEY)": "testing",
}
"""Known credentials that are not searched for: the word occurs in ordinary output."""

LOG_SUFFIXES = (".log", ".out", ".err")
MAX_LOG_BYTES = 20_000_000


@dataclass(frozen=True, order=True)
class Leak:
    where: str  # a test id and phase, or a file
    stream: str
    secret: str  # the secret's name, never its value


_leaks: set[Leak] = set()


def find_secrets(text: str) -> list[str]:
    """Names of the known secrets ``text`` contains."""
    return [name for name, value in SECRETS.items() if value in text]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Search what the test printed and logged (``report.capstdout``, ``capstderr`` and ``caplog``
    join the sections below; a teardown report repeats those of setup and call, so each section is
    searched in the report of its own phase)."""
    for title, text in report.sections:
        parts = title.split()
        if len(parts) == 3 and parts[0] == "Captured" and parts[2] == report.when:
            for name in find_secrets(text):
                _leaks.add(Leak(f"{report.nodeid} ({report.when})", parts[1], name))


def scan_logs(root: Path) -> list[Leak]:
    """Leaks in the log files under ``root``."""
    leaks = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in LOG_SUFFIXES or not path.is_file():
            continue
        try:
            if path.stat().st_size > MAX_LOG_BYTES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        leaks += [Leak(str(path), "file", name) for name in find_secrets(text)]
    return leaks


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None) if factory is not None else None
    if basetemp is not None and Path(basetemp).is_dir():
        _leaks.update(scan_logs(Path(basetemp)))
    if _leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _leaks:
        return
    terminalreporter.section("secret hygiene", sep="=", red=True, bold=True)
    for leak in sorted(_leaks):
        terminalreporter.line(f"SECRET LEAKED: {leak.secret} in {leak.stream} of {leak.where}", red=True)
    terminalreporter.line(f"{len(_leaks)} leak(s): a secret reached test output or a log file.", red=True)
