"""An SDK client (session, connection) a driver makes at first use and shares between its worker
threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedClient(Generic[T]):
    """``make()`` run once, by whichever worker thread asks first; the others wait for it and get
    the same client. :meth:`take` hands it to ``close`` (the next :meth:`get` makes a new one)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._client: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def take(self) -> T | None:
        """The client made so far (None when there is none), forgotten here."""
        with self._lock:
            client, self._client = self._client, None
        return client
