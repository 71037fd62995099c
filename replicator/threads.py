"""Blocking work off the event loop: every state-store call and every CPU-heavy step (loading and
validating the inventory, compiling a tenant) a coroutine makes goes through :func:`blocking`, so
that the loop keeps answering (health checks, the API, lease renewals) while the database waits
on a lock or the CPU validates ten thousand users.

The calls run in a pool of their own, not in asyncio's default executor: drivers run their SDK
calls there (``asyncio.to_thread``), and a sweep of many tenants keeps it busy; a lease renewal or
an audit record must not queue behind platform calls. The pool has fewer threads than the
store's connection pool has connections (SQLAlchemy's default: 5 + 10 overflow), so a burst of
calls waits here rather than failing on an exhausted connection pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

THREADS = 8
"""Worker threads of the pool (see the module docstring for why fewer than 15)."""

_pool = ThreadPoolExecutor(THREADS, thread_name_prefix="replicator-blocking")


async def blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, awaited; the caller's context variables (the
    log context, a SCIM policy) go with it, as with ``asyncio.to_thread``. Cancelling the caller
    does not stop the call: it finishes in its thread and its result is dropped."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_pool, call)
