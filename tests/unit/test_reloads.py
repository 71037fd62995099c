"""Coalesced reloads (replicator.service.reload.Reloads) and the worker threads they and every
store call run in (replicator.threads.blocking): at most one reload at a time, any number of
requests during one make exactly one more, a failed reload does not stop later ones; an in-memory
store is one database for every thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from replicator.service.reload import Reloads
from replicator.threads import blocking
from state import ObjectWrite, Store


class Counted:
    """A reload that waits for ``go`` each time and counts how often it ran, and how many at once."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.runs = 0
        self.running = 0
        self.most = 0
        self.fail = False

    async def __call__(self) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        try:
            await self.go.wait()
            if self.fail:
                raise RuntimeError("a bug in the reload")
        finally:
            self.running -= 1
            self.runs += 1


async def test_requests_during_a_reload_make_exactly_one_more() -> None:
    run = Counted()
    reloads = Reloads(run)
    reloads.request()
    await run.started.wait()
    for _ in range(10):
        reloads.request()
    assert reloads.busy
    run.go.set()
    await reloads.settled()
    assert run.runs == 2
    assert run.most == 1, "never two reloads at once"
    assert reloads.runs == 2
    assert not reloads.busy


async def test_a_request_after_the_reload_runs_another() -> None:
    run = Counted()
    run.go.set()
    reloads = Reloads(run)
    reloads.request()
    await reloads.settled()
    reloads.request()
    await reloads.settled()
    assert run.runs == 2


async def test_a_failed_reload_is_logged_and_the_next_request_still_runs() -> None:
    run = Counted()
    run.fail = True
    run.go.set()
    reloads = Reloads(run)
    reloads.request()
    await reloads.settled()
    run.fail = False
    reloads.request()
    await reloads.settled()
    assert run.runs == 2


async def test_settled_returns_at_once_when_nothing_was_requested() -> None:
    reloads = Reloads(Counted())
    await reloads.settled()
    assert reloads.runs == 0


async def test_blocking_runs_in_another_thread_with_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("from the caller")

    def where() -> tuple[int, str]:
        return threading.get_ident(), var.get()

    ident, seen = await blocking(where)
    assert ident != threading.get_ident()
    assert seen == "from the caller"


async def test_an_in_memory_store_is_one_database_for_every_thread() -> None:
    store = Store("sqlite://")
    try:
        writes = [
            blocking(store.write_objects, "test", [ObjectWrite("meshUser", f"u{i}", {"n": i})])
            for i in range(20)
        ]
        await asyncio.gather(*writes)
        assert len(await blocking(store.list_objects)) == 20
        assert len(store.list_objects()) == 20, "the same database from the loop's thread"
        assert store.objects_revision() == 20
    finally:
        store.close()
