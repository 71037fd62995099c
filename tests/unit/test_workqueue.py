"""The daemon's work queue driven directly: one run per key at a time, change before resync,
platforms interleaved in a sweep, per-key backoff that a trigger does not reset."""

from __future__ import annotations

import asyncio
import time

import pytest

from replicator.service.metrics import Metrics
from replicator.service.workqueue import Added, Priority, WorkQueue


async def take(q: WorkQueue, within: float = 5.0) -> str:
    item = await asyncio.wait_for(q.get(), within)
    return item.key


async def drain(q: WorkQueue) -> list[str]:
    keys = []
    while q.depth():
        key = await take(q)
        q.done(key)
        keys.append(key)
    return keys


async def test_a_key_waits_once() -> None:
    q = WorkQueue()
    assert q.add("a") is Added.QUEUED
    assert q.add("a") is Added.WAITING
    assert q.depth() == 1
    assert await drain(q) == ["a"]


async def test_a_key_added_while_it_runs_runs_once_more_afterwards_and_never_twice_at_once() -> None:
    q = WorkQueue()
    q.add("a")
    assert await take(q) == "a"
    assert [q.add("a", reason="api trigger") for _ in range(5)] == [Added.RUNNING] * 5
    assert q.depth() == 0, "not handed to another worker while it runs"
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.done("a")
    item = await asyncio.wait_for(getter, 5)
    assert (item.key, item.reason) == ("a", "api trigger")
    q.done("a")
    assert q.depth() == 0, "five adds during the run: exactly one more run"


async def test_change_driven_keys_go_before_the_resync() -> None:
    q = WorkQueue()
    for key in ("r1", "r2", "r3"):
        q.add(key, platform="p", priority=Priority.RESYNC, reason="resync")
    q.add("c1", platform="p", reason="input change")
    assert q.add("r3", platform="p", reason="api trigger") is Added.WAITING  # promoted
    assert (q.depth(Priority.CHANGE), q.depth(Priority.RESYNC)) == (2, 2)
    item = await q.get()
    assert item.key == "c1"
    q.done("c1")
    item = await q.get()
    assert (item.key, item.reason) == ("r3", "api trigger")
    q.done("r3")
    assert await drain(q) == ["r1", "r2"]


async def test_a_resync_interleaves_the_platforms() -> None:
    q = WorkQueue()
    for platform, n in (("aws", 4), ("azure", 2), ("gcp", 1)):
        for i in range(n):
            q.add(f"{platform}-{i}", platform=platform, priority=Priority.RESYNC, reason="resync")
    assert await drain(q) == ["aws-0", "azure-0", "gcp-0", "aws-1", "azure-1", "aws-2", "aws-3"]


async def test_the_backoff_grows_with_jitter_and_is_capped() -> None:
    q = WorkQueue(base=5.0, cap=600.0, jitter=0.2)
    delays = [q.retry("a") for _ in range(10)]
    q.close()
    for n, delay in enumerate(delays[:7]):
        assert 5.0 * 2**n * 0.8 <= delay <= 5.0 * 2**n * 1.2
    assert 5.0 * 2**7 * 0.8 <= delays[7] <= 600.0, "jittered, then capped"
    assert delays[-2:] == [600.0] * 2
    assert q.failures("a") == 10
    q.forget("a")
    assert q.failures("a") == 0
    assert 4.0 <= q.retry("a") <= 6.0, "after a success the backoff starts afresh"
    q.close()


async def test_a_trigger_does_not_reset_the_backoff_and_force_does() -> None:
    q = WorkQueue(base=0.3, cap=10.0, jitter=0.0)
    q.add("a")
    await take(q)
    q.add("a", reason="api trigger")  # a trigger during the failing run ...
    assert q.retry("a") == 0.3
    q.done("a")
    assert q.depth() == 0, "... is folded into the backoff"
    assert q.in_backoff("a")
    assert [q.add("a", reason="api trigger") for _ in range(100)] == [Added.BACKOFF] * 100
    started = time.monotonic()
    item = await asyncio.wait_for(q.get(), 5)
    assert (item.key, item.reason) == ("a", "retry")
    assert time.monotonic() - started >= 0.25, "it ran when its backoff ended, not before"
    assert q.retry("a") == 0.6, "the backoff grew"
    q.done("a")
    assert q.add("a", reason="api trigger", force=True) is Added.QUEUED
    assert q.failures("a") == 0
    assert not q.in_backoff("a")
    assert await drain(q) == ["a"]


async def test_a_delayed_add_waits_for_its_delay_and_a_trigger_cuts_it_short() -> None:
    q = WorkQueue()
    q.add_after("a", 60)
    assert q.depth() == 0
    assert q.add("a", reason="api trigger") is Added.QUEUED
    assert await drain(q) == ["a"]
    q.add_after("b", 0.05)
    assert await take(q) == "b"
    q.close()


async def test_the_queue_metrics() -> None:
    m = Metrics()
    q = WorkQueue(metrics=m)
    q.add("a", platform="p", priority=Priority.RESYNC, reason="resync")
    q.add("b", platform="p", reason="input change")
    q.add("b", platform="p", reason="api trigger")  # merged: not an add

    def sample(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert sample("replicator_workqueue_depth", priority="change") == 1
    assert sample("replicator_workqueue_depth", priority="resync") == 1
    assert sample("replicator_queue_depth") == 2
    assert sample("replicator_workqueue_adds_total", reason="resync") == 1
    assert sample("replicator_workqueue_adds_total", reason="input change") == 1
    assert sample("replicator_workqueue_adds_total", reason="api trigger") is None
    await take(q)
    q.retry("b")
    q.done("b")
    q.close()
    assert sample("replicator_workqueue_retries_total") == 1
    assert sample("replicator_workqueue_queue_duration_seconds_count") == 1
    assert sample("replicator_workqueue_work_duration_seconds_count") == 1
    assert sample("replicator_queue_depth") == 1


@pytest.mark.parametrize("workers", [1, 4])
async def test_workers_never_run_one_key_twice_at_once(workers: int) -> None:
    """Workers and a stream of adds of few keys: no key is ever taken while it runs."""
    q = WorkQueue()
    running: set[str] = set()
    overlaps: list[str] = []
    runs = 0

    async def worker() -> None:
        nonlocal runs
        while True:
            key = (await q.get()).key
            if key in running:
                overlaps.append(key)
            running.add(key)
            await asyncio.sleep(0.001)
            running.discard(key)
            runs += 1
            q.done(key)

    tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
    for i in range(300):
        q.add(f"k{i % 3}", reason="api trigger")
        await asyncio.sleep(0)
    deadline = time.monotonic() + 10
    while q.depth() or running:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    for t in tasks:
        t.cancel()
    assert overlaps == []
    assert 3 <= runs < 300, "adds during a run were merged"


async def test_a_sweep_is_handed_out_in_batches_of_one_platform_at_a_time() -> None:
    q = WorkQueue()
    for n in range(5):
        q.add(f"a{n}", platform="aws", priority=Priority.RESYNC, reason="resync")
    for n in range(2):
        q.add(f"g{n}", platform="gcp", priority=Priority.RESYNC, reason="resync")
    first = await asyncio.wait_for(q.take(batch=3), 5)
    assert [i.key for i in first] == ["a0", "a1", "a2"]
    assert {i.priority for i in first} == {Priority.RESYNC}
    second = await asyncio.wait_for(q.take(batch=3), 5)
    assert [i.key for i in second] == ["g0", "g1"], "the next platform in turn, not more of the first"
    third = await asyncio.wait_for(q.take(batch=3), 5)
    assert [i.key for i in third] == ["a3", "a4"]
    for item in (*first, *second, *third):
        q.done(item.key)
    assert q.depth() == 0


async def test_resync_batches_leave_a_slot_for_changes() -> None:
    """With one resync slot, a second worker takes no resync batch while one runs, but a change
    at once; the resync key is handed out when the running batch ends."""
    q = WorkQueue()
    for key in ("r1", "r2", "r3"):
        q.add(key, platform="p", priority=Priority.RESYNC, reason="resync")
    batch = await asyncio.wait_for(q.take(batch=2, resync_slots=1), 5)
    assert [i.key for i in batch] == ["r1", "r2"]
    waiting = asyncio.ensure_future(q.take(batch=2, resync_slots=1))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "the only resync slot is taken"
    q.add("c", platform="p", reason="api trigger")
    (change,) = await asyncio.wait_for(waiting, 5)
    assert (change.key, change.priority) == ("c", Priority.CHANGE)
    q.done("c")
    waiting = asyncio.ensure_future(q.take(batch=2, resync_slots=1))
    await asyncio.sleep(0.05)
    q.done("r1")
    await asyncio.sleep(0.05)
    assert not waiting.done(), "half of the batch still runs"
    q.done("r2")
    (rest,) = await asyncio.wait_for(waiting, 5)
    assert rest.key == "r3"
    q.done("r3")


async def test_unfinished_work_and_the_longest_run_are_exported() -> None:
    metrics = Metrics()
    q = WorkQueue(metrics=metrics)
    q.add("a")
    q.add("b")
    await take(q)
    await asyncio.sleep(0.05)
    await take(q)
    sample = metrics.registry.get_sample_value
    longest = sample("replicator_workqueue_longest_running_processor_seconds")
    unfinished = sample("replicator_workqueue_unfinished_work_seconds")
    assert longest is not None
    assert unfinished is not None
    assert longest >= 0.05
    assert unfinished > longest, "two keys run: their times add up"
    q.done("a")
    q.done("b")
    assert sample("replicator_workqueue_unfinished_work_seconds") == 0.0


async def test_a_running_key_tells_whether_a_change_or_only_a_resync_came_for_it() -> None:
    q = WorkQueue()
    q.add("a", platform="p", priority=Priority.RESYNC, reason="resync")
    await take(q)
    assert not q.dirty("a")
    q.add("a", platform="p", priority=Priority.RESYNC, reason="resync")
    assert q.dirty("a")
    assert not q.dirty("a", Priority.CHANGE), "another sweep does not replace this run"
    q.add("a", platform="p", reason="api trigger")
    assert q.dirty("a", Priority.CHANGE)
    q.done("a")
    assert (await q.get()).reason == "api trigger"
