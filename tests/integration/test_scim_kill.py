"""A replica killed (SIGKILL, no clean-up) in the middle of a burst of SCIM creates: every create
the client retries on the other replica succeeds, or is answered 409 and then found by its
userName, exactly once; the store holds no meshUser without its SCIM resource and no SCIM
resource without its meshUser (a create is one transaction).

The moment of the kill is not chosen: four clients keep requests in flight, so it lands inside
one's write most of the time. `test_scim.py` stops a create deterministically between its two
writes (a database trigger) for the exact instant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from state import Store
from tests.support.daemons import wait_ready
from tests.support.local_server import free_port
from tests.support.scim_served import TOKEN, entra_user, write_config

USERS = 120
CLIENTS = 4


@contextmanager
def replica(config: Path, name: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A `replicator run` process on a free port; yields it and its SCIM base URL."""
    port = free_port()
    log = (config.parent / f"{name}.log").open("wb")
    env = {**os.environ, "SCIM_TEST_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "replicator", "-c", str(config), "--log-format", "json", "run"]
    proc = subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{port}", "--replica-id", name], env=env, stdout=log, stderr=log
    )
    try:
        wait_ready(proc, port, 60, lambda: (config.parent / f"{name}.log").read_text()[-3000:])
        yield proc, f"http://127.0.0.1:{port}/scim/v2"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()


def _create_or_find(http: httpx.Client, name: str) -> str:
    """The id of the User ``name`` on the surviving replica: created, or (409) looked up."""
    r = http.post("/Users", json=entra_user(name))
    if r.status_code == 201:
        return str(r.json()["id"])
    assert r.status_code == 409, r.text
    found = http.get("/Users", params={"filter": f'userName eq "{name}"'}).json()
    assert found["totalResults"] == 1, found
    return str(found["Resources"][0]["id"])


def test_a_replica_killed_mid_burst_leaves_no_orphan_and_every_retry_succeeds(tmp_path: Path) -> None:
    from tests.integration.test_store import _postgres_database

    databases = _postgres_database()
    url = next(databases)
    try:
        config = write_config(tmp_path, state=url)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with replica(config, "a") as (victim, a_url), replica(config, "b") as (_, b_url):
            names = iter(f"burst{i:03d}@example.com" for i in range(USERS))
            lock = threading.Lock()
            ids: dict[str, str] = {}
            retried: list[str] = []
            done_on_a = threading.Semaphore(0)

            def client() -> None:
                with (
                    httpx.Client(base_url=a_url, headers=headers, timeout=30) as a,
                    httpx.Client(base_url=b_url, headers=headers, timeout=30) as b,
                ):
                    while True:
                        with lock:
                            name = next(names, None)
                        if name is None:
                            return
                        try:
                            r = a.post("/Users", json=entra_user(name))
                            assert r.status_code == 201, r.text
                            ids[name] = r.json()["id"]
                            done_on_a.release()
                        except httpx.TransportError:  # the replica died under this request
                            retried.append(name)
                            ids[name] = _create_or_find(b, name)

            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            for _ in range(USERS // 3):  # a third of the burst answered by the victim, then kill it
                assert done_on_a.acquire(timeout=60)
            victim.send_signal(signal.SIGKILL)
            for t in threads:
                t.join(120)
            assert victim.wait(10) == -signal.SIGKILL
        assert len(ids) == USERS
        assert retried, "the kill interrupted no request: nothing was retried"
        store = Store(url)
        try:
            resources = store.scim_resources("User")
            users = store.list_objects("meshUser", source="scim", include_deprovisioned=True)
        finally:
            store.close()
        by_name = {str(r.document["userName"]): r.id for r in resources}
        assert len(resources) == USERS, "each user once"
        assert by_name == ids, "every create or retry ended with the one resource of its userName"
        assert {u.key for u in users} == {r.id for r in resources}, "no orphan either way"
    except BaseException:
        for name in ("a", "b"):
            log = tmp_path / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"--- replica {name}\n{log.read_text()[-3000:]}\n")
        raise
    finally:
        databases.close()
