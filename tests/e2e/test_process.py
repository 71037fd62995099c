"""The replicator as a process, as an operator starts it: the version, a port already in use, a
second daemon on one SQLite store. Each answer is a message and exit 1, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replicator import __version__
from tests.support.daemons import wait_ready
from tests.support.local_server import free_port


def _config(root: Path) -> Path:
    (root / "org.yaml").write_text(yaml.safe_dump({"kind": "meshWorkspace", "metadata": {"name": "ws"}}))
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump({"state": "sqlite:///state.db", "inventory": ["org.yaml"]}))
    return path


def _run(config: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "replicator", "-c", str(config), "--log-format", "json", "run"]
    return subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{port}", "--grace", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def test_version() -> None:
    r = subprocess.run([sys.executable, "-m", "replicator", "--version"], capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, f"replicator {__version__}")


def test_a_port_in_use_is_a_message_and_exit_1(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run(config, port)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err + out
    # Nothing started before the port was refused: the SQLite store is not claimed.
    port = free_port()
    proc = _run(config, port)
    try:
        wait_ready(proc, port, 30, lambda: proc.communicate()[1][-2000:])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("replica", [[], ["--replica-id", "same"]], ids=["default ids", "one id given twice"])
def test_a_second_daemon_on_one_sqlite_store_is_refused(tmp_path: Path, replica: list[str]) -> None:
    config = _config(tmp_path)
    first_port = free_port()
    first = _run(config, first_port, *replica)
    try:
        wait_ready(first, first_port, 30, lambda: first.communicate()[1][-2000:])
        second = _run(config, free_port(), *replica)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert "is in use by" in err
        assert "SQLite serves one replica" in err
        assert "Traceback" not in err
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 0
