"""The collector pause around building an inventory: nested, across threads, and resumed."""

from __future__ import annotations

import gc
import threading

from replicator.memory import bulk


def test_the_collector_is_paused_inside_and_resumed_after_the_last_pause() -> None:
    assert gc.isenabled()
    started, release = threading.Event(), threading.Event()

    def other() -> None:
        with bulk():
            started.set()
            release.wait(10)

    with bulk():
        assert not gc.isenabled()
        with bulk():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause goes on
        thread = threading.Thread(target=other)
        thread.start()
        assert started.wait(10)
    assert not gc.isenabled()  # the other thread's pause goes on
    release.set()
    thread.join(10)
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what the pauses made is not walked again
    with bulk():
        assert gc.get_freeze_count() == 0  # a new pause unfreezes: old cycles are found again
    gc.unfreeze()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with bulk():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
