"""The daemon's event loop never waits on the state store or on a reload: while a store call waits
on a real database lock (a SQLite file another connection holds with BEGIN EXCLUSIVE, a PostgreSQL
row another transaction holds FOR UPDATE) or a reload is busy, /healthz still answers; reloads
are coalesced; the loop's lag is exported. A daemon started in-process over real HTTP, no
platform called (no workers)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from replicator.cli import main
from replicator.service import reload
from replicator.service.daemon import Daemon
from tests.integration.test_objects_api import READ_KEY, WRITE_KEY, YAML, as_yaml, user, write_project
from tests.integration.test_store import _postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    else:
        yield from _postgres_database()


class Served:
    def __init__(self, daemon: Daemon, http: httpx.AsyncClient, stored_key: str) -> None:
        self.daemon, self.http, self.stored_key = daemon, http, stored_key

    async def healthz(self) -> int:
        return (await self.http.get("/healthz")).status_code

    async def until(self, check: Callable[[], bool], what: str) -> None:
        for _ in range(600):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never happened: {what}")


async def serve(tmp_path: Path, state: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.setenv("OBJ_KEY_READ", READ_KEY)
    monkeypatch.setenv("OBJ_KEY_WRITE", WRITE_KEY)
    path = write_project(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["state"] = state
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    # A key kept in the store: identifying it reads and writes the store (its last use).
    secret = _create_key(path)
    d = Daemon(config_path=path, listen=("127.0.0.1", 0), workers=0, watch_interval=60, grace=1)
    await d.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}", timeout=60) as http:
            yield Served(d, http, secret)
    finally:
        await d.stop()


def _create_key(config_path: Path) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-c", str(config_path), "apikey", "create", "root", "--scopes", "read"]) == 0
    return out.getvalue().strip()


@pytest.fixture
async def served(tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    async for s in serve(tmp_path, state_url, monkeypatch):
        yield s


@pytest.fixture
async def on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    async for s in serve(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", monkeypatch):
        yield s


class Lock:
    """The store's ``api_keys`` table held by another connection until ``release``: a SQLite file
    with BEGIN EXCLUSIVE (every writer waits), a PostgreSQL row with SELECT ... FOR UPDATE (its
    update waits)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._release: Callable[[], None] = lambda: None

    def hold(self) -> None:
        if self.url.startswith("sqlite"):
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")

            def release_sqlite() -> None:
                conn.execute("ROLLBACK")
                conn.close()

            self._release = release_sqlite
            return
        engine = create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1))
        pg = engine.connect()
        pg.begin()
        assert pg.execute(text("SELECT name FROM api_keys WHERE name = 'root' FOR UPDATE")).all()

        def release_pg() -> None:
            pg.rollback()
            pg.close()
            engine.dispose()

        self._release = release_pg

    def release(self) -> None:
        self._release()


async def test_healthz_answers_while_a_store_call_waits_on_a_database_lock(
    served: Served, state_url: str
) -> None:
    auth = {"Authorization": f"Bearer {served.stored_key}"}
    assert (await served.http.get("/v1/status", headers=auth)).status_code == 200
    lock = Lock(state_url)
    lock.hold()
    try:
        # Identifying the stored key writes its last use: that waits on the lock.
        status = asyncio.ensure_future(served.http.get("/v1/status", headers=auth))
        await asyncio.sleep(0.2)
        assert not status.done(), "the status request should be waiting on the lock"
        for _ in range(3):
            assert await served.healthz() == 200
            assert (await served.http.get("/metrics")).status_code == 200
        assert not status.done(), "the lock still holds the status request"
    finally:
        lock.release()
    assert (await status).status_code == 200


class Gate:
    """Holds every reload inside its validation (in the reload's worker thread) until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        real = reload.validate

        def gated(loaded: Any) -> Any:
            self.entered.set()
            assert self.opened.wait(60), "the gate was never opened"
            return real(loaded)

        monkeypatch.setattr(reload, "validate", gated)


async def test_a_reload_runs_off_the_loop_and_coalesces_the_writes_made_meanwhile(
    on_sqlite: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, d = on_sqlite, on_sqlite.daemon
    gate = Gate(monkeypatch)
    before = d._reloads.runs
    # A reload that reads and validates everything again (as after another replica's write); one
    # after this replica's own write starts from the inventory that write validated.
    d.loaded_cache.forget()
    d.objects_changed()
    await served.until(gate.entered.is_set, "the reload reached its validation")
    assert d._reloads.busy
    assert await served.healthz() == 200, "/healthz answers while the reload validates"

    # Writes through the object API return while the reload is busy (they do not wait for it).
    write = {**YAML, "Authorization": f"Bearer {WRITE_KEY}"}
    names = [f"user{i}" for i in range(5)]
    for name in names:
        r = await served.http.put("/api/meshobjects", content=as_yaml(user(name)), headers=write)
        assert r.status_code == 200, r.text
    assert d._reloads.busy, "still the first reload"
    assert d._reloads.runs == before
    assert d.validated is not None
    assert not set(names) & set(d.validated.inventory.users)

    gate.opened.set()
    await d.settled()
    assert d._reloads.runs == before + 2, "five writes during a reload make one more reload, not five"
    assert set(names) <= set(d.validated.inventory.users), "the one more reload saw every write"


async def test_an_invalid_input_found_by_a_reload_keeps_the_last_good_one(on_sqlite: Served) -> None:
    d = on_sqlite.daemon
    good = d.validated
    d.config_path.write_text(d.config_path.read_text() + "\nbogusKey: 1\n")
    assert not await d.reload()
    assert d.config_error is not None
    assert "bogusKey" in d.config_error
    assert d.validated is good
    assert await on_sqlite.healthz() == 200


async def test_the_event_loop_lag_is_exported(on_sqlite: Served) -> None:
    import time

    registry = on_sqlite.daemon.metrics.registry

    def lag(sample: str, **labels: str) -> float:
        return registry.get_sample_value(f"replicator_event_loop_lag_seconds{sample}", labels) or 0.0

    # The loop blocked on purpose: the sampler (every 0.25 s) wakes at least 0.35 s late.
    time.sleep(0.6)  # noqa: ASYNC251
    await on_sqlite.until(lambda: lag("_count") > lag("_bucket", le="0.25"), "a sample above 0.25 s")
    exported = (await on_sqlite.http.get("/metrics")).text
    assert "replicator_event_loop_lag_seconds_bucket" in exported
    assert "replicator_event_loop_lag_last_seconds" in exported


async def test_the_reload_after_this_replica_s_own_write_reuses_that_write_s_validation(
    on_sqlite: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, d = on_sqlite, on_sqlite.daemon
    validations: list[object] = []
    real = reload.validate

    def counted(loaded: Any) -> Any:
        validations.append(loaded)
        return real(loaded)

    monkeypatch.setattr(reload, "validate", counted)
    write = {**YAML, "Authorization": f"Bearer {WRITE_KEY}"}
    r = await served.http.put("/api/meshobjects", content=as_yaml(user("reused")), headers=write)
    assert r.status_code == 200, r.text
    await d.settled()
    assert d.validated is not None
    assert "reused" in d.validated.inventory.users
    assert validations == [], "the reload validated the whole inventory again"


async def test_an_api_key_whose_secret_cannot_be_read_is_a_config_error_not_a_silent_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBJ_KEY_READ", READ_KEY)
    monkeypatch.delenv("OBJ_KEY_WRITE", raising=False)
    path = write_project(tmp_path)
    d = Daemon(config_path=path, listen=("127.0.0.1", 0), workers=0, watch_interval=60, grace=1)
    await d.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}", timeout=60) as http:
            assert d.validated is None
            assert d.config_error is not None
            assert "api key ci: api.keys[1].secret: cannot be read" in d.config_error
            assert "OBJ_KEY_WRITE is not set" in d.config_error
            assert (await http.get("/readyz")).status_code == 503
            monkeypatch.setenv("OBJ_KEY_WRITE", WRITE_KEY)
            assert await d.reload()
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await d.stop()
