"""A fault-injecting HTTP proxy for tests: real sockets on 127.0.0.1, in front of moto or Keystone.

    with FaultProxy(moto.url, rate=0.2, seed=7) as proxy:
        options = moto.driver_options(endpointUrl=proxy.url)
        ...                               # the driver talks to moto through the proxy
        proxy.rate = 0.0                  # fault-free from now on (changeable at any time)
        assert proxy.counts["drop_after"] > 0

The proxy itself speaks plain HTTP; ``upstream`` may be ``https://`` (a local test server such as
the kube-apiserver: its certificate is not verified).

Every request is forwarded to ``upstream`` (same method, path, headers and body) unless the seeded
RNG decides to inject a fault, with probability ``rate``. The faults (``FAULTS``) are

``429``         answer 429 Too Many Requests with ``Retry-After`` (0 or 1 s) without forwarding;
``500``/``503`` answer a server error without forwarding;
``slow``        forward, then hold the answer ``slow_seconds`` (past the client's timeout when the
                client has one shorter than that: the upstream applied the call, the client gave up);
``drop_before`` close the connection without answering and without forwarding;
``drop_after``  forward (the upstream applies the call: a write the client never sees), then close
                the connection without answering. This is the case that tests idempotency.

The error bodies are JSON that both botocore (``__type``) and keystoneauth (``error``) understand.
With ``aws_conflicts=True`` the proxy also does what AWS does and moto does not: a write whose
answer was dropped after forwarding and that arrives again, byte for byte, within a few seconds
(botocore retries a request on a dropped connection by itself) is refused with 409
``ConflictException`` (``UNIQUENESS_CONSTRAINT_VIOLATION``) instead of reaching moto, which would
store a second membership or account assignment. Any forwarded delete forgets those writes.

With ``quota=N`` the proxy also throttles as a platform's quota does: a token bucket of ``N``
requests per second (holding at most ``N``, full at the start) that every request draws from; a
request that finds it empty is answered 429 with ``Retry-After`` (whole seconds until the next
token, at least 1) without forwarding, counted as ``429`` and in ``counts["quota"]``.

``counts`` says how many of each were injected (and ``forwarded``: requests that reached the
upstream). ``match`` limits faults to requests it accepts (e.g. only writes); others pass through.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.local_server import LocalHttpServer

FAULTS: tuple[str, ...] = ("429", "500", "503", "slow", "drop_before", "drop_after")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
_AWS_CODES = {429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}
_REPEAT_WINDOW = 5.0  # seconds: botocore retries a dropped write within about one
_TITLES = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class Request:
    """What ``match`` sees of a request: method, path, headers (lower-case names), body."""

    def __init__(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def operation(self) -> str:
        """The AWS JSON operation (``X-Amz-Target``, e.g. ``AWSIdentityStore.CreateGroup``) or
        ``METHOD PATH`` for REST APIs such as Keystone."""
        return self.headers.get("x-amz-target") or f"{self.method} {self.path}"


class FaultProxy(LocalHttpServer):
    """A threaded HTTP proxy to ``upstream`` that injects faults at ``rate`` with a seeded RNG."""

    thread_name = "fault-proxy"
    join_timeout = 10.0

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        seed: int = 0,
        faults: Mapping[str, float] | None = None,
        slow_seconds: float = 1.0,
        retry_after: tuple[int, ...] = (0, 1),
        match: Callable[[Request], bool] | None = None,
        aws_conflicts: bool = False,
        quota: float | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// or https:// URL, not {upstream!r}")
        self.upstream_tls = parsed.scheme == "https"
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.upstream_prefix = parsed.path.rstrip("/")
        self._kinds: list[str] = []
        self._weights: list[float] = []
        self._lock = threading.Lock()
        self.set_faults(faults if faults is not None else dict.fromkeys(FAULTS, 1.0))
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.match = match
        self.aws_conflicts = aws_conflicts
        self._lost_writes: dict[tuple[str, bytes], float] = {}
        self.errors: list[str] = []
        """Exceptions raised inside the proxy's handlers (a test should assert there are none)."""
        self._rate = rate
        self.quota = quota
        self._tokens = quota or 0.0
        self._refilled = time.monotonic()
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        """Injected faults by kind, plus ``forwarded`` (requests the upstream received)."""
        self.log: list[tuple[str, str]] = []
        """(operation, fault or "ok") per request, in arrival order."""

    # --- control --------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self._lock:
            self._rate = value

    def set_faults(self, weights: Mapping[str, float]) -> None:
        """Which faults to inject from now on, with their relative weights (``{"drop_after": 1}``)."""
        unknown = set(weights) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        kinds = [k for k, w in weights.items() if w > 0]
        with self._lock:
            self._kinds, self._weights = kinds, [weights[k] for k in kinds]

    @property
    def injected(self) -> int:
        """How many faults were injected so far (all kinds)."""
        with self._lock:
            return sum(n for k, n in self.counts.items() if k in FAULTS)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    # --- lifecycle ------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        class Handler(_Handler):
            owner = self

        return Handler

    def _make_server(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
    ) -> ThreadingHTTPServer:
        proxy = self

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                import sys
                import traceback

                if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
                    proxy._count("client_gone")  # a client killed or timed out mid-request
                    return
                proxy.errors.append(traceback.format_exc())

        return Server(address, handler)

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        self._stopping.set()  # wakes up handlers holding a slow answer
        super().stop()

    # --- decisions ------------------------------------------------------------------------------

    def _decide(self, request: Request) -> tuple[str | None, int]:
        """The fault for this request (None: forward it) and the Retry-After to send with a 429."""
        eligible = self.match is None or self.match(request)
        with self._lock:
            # The RNG is drawn for every request, eligible or not, so one seed gives one sequence.
            roll = self._rng.random()
            kind = self._rng.choices(self._kinds, self._weights)[0] if self._kinds else None
            wait = self._rng.choice(self.retry_after) if self.retry_after else 0
            fault = kind if eligible and roll < self._rate else None
            if fault is None and self.quota:
                over = self._take_token()
                if over is not None:
                    fault, wait = "429", over
                    self.counts["quota"] += 1
            if fault is not None:
                self.counts[fault] += 1
            self.log.append((request.operation, fault or "ok"))
        return fault, wait

    def _take_token(self) -> int | None:
        """Draw a token from the quota's bucket (the lock held): None when there was one, else the
        Retry-After to send (whole seconds until the next token, at least 1)."""
        assert self.quota
        now = time.monotonic()
        self._tokens = min(self.quota, self._tokens + (now - self._refilled) * self.quota)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return max(1, math.ceil((1 - self._tokens) / self.quota))

    def _remember_lost(self, request: Request) -> None:
        if self.aws_conflicts and ".Create" in request.operation:
            with self._lock:
                self._lost_writes[(request.operation, request.body)] = time.monotonic()

    def _repeated(self, request: Request) -> bool:
        """Whether this is a retry of a write whose answer was lost (consumed when it is)."""
        if not self.aws_conflicts:
            return False
        with self._lock:
            if ".Delete" in request.operation:
                self._lost_writes.clear()
                return False
            at = self._lost_writes.pop((request.operation, request.body), None)
            if at is None or time.monotonic() - at > _REPEAT_WINDOW:
                return False
            self.counts["conflict"] += 1
            return True

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _forward(self, request: Request) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn: http.client.HTTPConnection
        if self.upstream_tls:  # a local test server's self-signed certificate: not verified
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(
                self.upstream_host, self.upstream_port, timeout=60, context=context
            )
        else:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
            headers["host"] = f"{self.upstream_host}:{self.upstream_port}"
            headers["content-length"] = str(len(request.body))
            conn.request(request.method, self.upstream_prefix + request.path, request.body, headers)
            response = conn.getresponse()
            body = response.read()
            self._count("forwarded")
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, response.reason, kept, body
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines would only clutter test output."""

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, self.path, headers, body)
        fault, wait = proxy._decide(request)
        if fault in ("429", "500", "503"):
            self._error(int(fault), wait)
            return
        if fault == "drop_before":
            self._drop()
            return
        if proxy._repeated(request):
            self._conflict()
            return
        try:
            status, reason, out_headers, out_body = proxy._forward(request)
        except OSError as exc:  # the upstream is down: say so like a gateway would
            self._send(502, "Bad Gateway", [("Content-Type", "text/plain")], f"upstream: {exc}".encode())
            return
        if fault == "drop_after":
            proxy._remember_lost(request)
            self._drop()
            return
        if fault == "slow" and proxy._stopping.wait(proxy.slow_seconds):
            self._drop()
            return
        self._send(status, reason, out_headers, out_body)

    def _error(self, status: int, retry_after: int) -> None:
        payload = {
            "__type": _AWS_CODES[status],
            "message": f"injected {status}",
            "error": {"code": status, "title": _TITLES[status], "message": f"injected {status}"},
        }
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", _AWS_CODES[status])]
        if status in (429, 503):
            headers.append(("Retry-After", str(retry_after)))
        self._send(status, _TITLES[status], headers, json.dumps(payload).encode())

    def _conflict(self) -> None:
        payload = {
            "__type": "ConflictException",
            "Message": "injected: the resource already exists",
            "Reason": "UNIQUENESS_CONSTRAINT_VIOLATION",
        }
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", "ConflictException")]
        self._send(409, "Conflict", headers, json.dumps(payload).encode())

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        try:
            self.send_response_only(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout) while we were slow: nothing to answer
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle
