"""Building a large inventory: the cyclic garbage collector is paused while one is read,
validated and compiled.

Those phases make millions of long-lived objects (a 100,000-tenant inventory has over a million)
and free almost none, and they hold no reference cycles; each full collection the collector starts
meanwhile walks every object made so far, again: two thirds of a 10,000-tenant load were spent
there. Reference counting still frees what is dropped. When the last pause ends, what exists is
frozen (``gc.freeze``: the collector's later runs do not walk it again) and the collector runs
again; the next pause unfreezes it first, so what the previous inventory left in cycles is found
by the first run after that pause.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """The collector paused for the block; pauses nest, and across threads the last to end
    freezes what exists and resumes the collector (if it was running when the first began)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
            gc.unfreeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.freeze()
                if _was_enabled:
                    gc.enable()
