"""The daemon's per-platform concurrency limit: a freed slot goes to change-driven work first."""

from __future__ import annotations

import asyncio

from replicator.service.gates import PriorityGate
from replicator.service.workqueue import Priority


async def test_a_freed_slot_goes_to_a_change_before_earlier_resync_waiters() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    release = asyncio.Event()

    async def run(name: str, priority: Priority) -> None:
        async with gate.enter(priority):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.ensure_future(run("first", Priority.RESYNC))
    await asyncio.sleep(0)
    waiters = [asyncio.ensure_future(run(f"resync{n}", Priority.RESYNC)) for n in range(3)]
    await asyncio.sleep(0)
    change = asyncio.ensure_future(run("change", Priority.CHANGE))
    await asyncio.sleep(0)
    assert gate.waiting() == 4
    release.set()
    await asyncio.wait_for(asyncio.gather(first, change, *waiters), 5)
    assert order == ["first", "change", "resync0", "resync1", "resync2"]
    assert gate.busy == 0


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    gate = PriorityGate(2)
    held = asyncio.Event()

    async def hold() -> None:
        async with gate.enter():
            await held.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(2)]
    await asyncio.sleep(0)
    cancelled = asyncio.ensure_future(hold())
    later = asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    held.set()
    await asyncio.wait_for(asyncio.gather(*holders, later), 5)
    assert cancelled.cancelled()
    assert gate.busy == 0, "every slot came back"
    assert gate.waiting() == 0


async def test_a_resync_waiter_that_became_urgent_goes_first() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    release = asyncio.Event()
    changed: set[str] = set()

    async def run(name: str) -> None:
        async with gate.enter(Priority.RESYNC, lambda: name in changed):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.ensure_future(run("first"))
    await asyncio.sleep(0)
    waiters = [asyncio.ensure_future(run(f"resync{n}")) for n in range(3)]
    await asyncio.sleep(0)
    changed.add("resync2")  # its tenant changed while it waited
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *waiters), 5)
    assert order == ["first", "resync2", "resync0", "resync1"]
