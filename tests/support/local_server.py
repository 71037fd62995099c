"""The lifecycle the in-process test servers share: a ``ThreadingHTTPServer`` on 127.0.0.1 in a thread.

A server subclasses ``LocalHttpServer``, gives its handler class (``_handler``) and thread name, and
gets ``start``/``stop``, the context manager, ``port`` and ``url``. ``start`` binds a free port
(``_bind`` may be called earlier, e.g. in ``__init__`` when the port must be known before the
server runs) and serves in a daemon thread; ``stop`` shuts the server down, closes its socket and
joins the thread; both are idempotent. A restart binds a new free port. ``url`` and ``port`` raise
``RuntimeError`` while no server is bound, unless ``address_outlives_server`` keeps those of the
last one after ``stop``. ``WorldServer`` adds what the fake API servers (CF, GCP) share: their
state is one dataclass (``world``) that the handler reads and ``reset`` renews. ``StartStop`` alone
is the context manager over ``start``/``stop``, for a server that is not an ``http.server``
(moto's). ``free_port`` is a port on 127.0.0.1 that nobody listens on (for a server to bind next, or
to test an unreachable one).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: nothing listens on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StartStop:
    """``with server:`` starts it and stops it, over the subclass's ``start`` and ``stop``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalHttpServer(StartStop):
    """A ``ThreadingHTTPServer`` on 127.0.0.1 serving the subclass's ``_handler()`` in a thread."""

    thread_name: ClassVar[str] = "local-http"
    scheme: ClassVar[str] = "http"
    url_suffix: ClassVar[str] = ""
    """Appended to ``scheme://host:port`` in ``url`` (``"/"`` for a server whose url ends with one)."""
    join_timeout: ClassVar[float] = 5.0
    poll_interval: ClassVar[float] = 0.5
    """How often ``serve_forever`` checks for a shutdown request."""
    address_outlives_server: ClassVar[bool] = False
    """True: ``url`` and ``port`` still answer after ``stop`` (e.g. to test an unreachable server)."""

    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _address: tuple[str, int] | None = None

    # --- for subclasses -------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _make_server(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
    ) -> ThreadingHTTPServer:
        return ThreadingHTTPServer(address, handler)

    def _bind(self, port: int = 0) -> ThreadingHTTPServer:
        """Create the server on 127.0.0.1:``port`` (0: a free one) without serving yet."""
        server = self._make_server(("127.0.0.1", port), self._handler())
        server.daemon_threads = True
        host, bound = server.server_address[:2]
        self._httpd, self._address = server, (str(host), int(bound))
        return server

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        server = self._httpd or self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever, args=(self.poll_interval,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._httpd = self._httpd, None
        thread, self._thread = self._thread, None
        if not self.address_outlives_server:
            self._address = None
        if server is not None:
            if thread is not None:  # shutdown() waits for a serve_forever that never ran
                server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=self.join_timeout)

    # --- where ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._address is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._address[1]

    @property
    def url(self) -> str:
        if self._address is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._address
        return f"{self.scheme}://{host}:{port}{self.url_suffix}"


class _World(Protocol):
    """A dataclass holding a server's state, every access under ``lock``."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    lock: threading.RLock


WorldT = TypeVar("WorldT", bound=_World)


class WorldServer(LocalHttpServer, Generic[WorldT]):
    """A ``LocalHttpServer`` whose state is one dataclass, ``world`` (made by ``new_world``), that its
    handler class (a subclass of ``handler`` per server) reads as its class attribute ``world``."""

    reset_keeps: ClassVar[tuple[str, ...]] = ("lock",)
    """The fields of ``world`` that ``reset`` keeps."""

    def __init__(self, new_world: Callable[[], WorldT], handler: type[BaseHTTPRequestHandler]) -> None:
        self._new_world = new_world
        self._handler_base = handler
        self.world = new_world()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (self._handler_base,), {"world": self.world})

    def reset(self) -> None:
        """Every field of ``world`` but those in ``reset_keeps`` as a new world has it (in place:
        the running handler keeps the same ``world``)."""
        with self.world.lock:
            fresh = self._new_world()
            for name in fresh.__dataclass_fields__:
                if name not in self.reset_keeps:
                    setattr(self.world, name, getattr(fresh, name))
