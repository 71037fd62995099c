"""How the Azure driver calls Graph and ARM.

msgraph-sdk (async, kiota) talks to Graph; azure-mgmt-authorization (sync, in a worker thread) to
ARM; both take their tokens from one azure-identity credential. The SDKs are imported lazily, inside
methods. The SDKs' own retry handlers are switched off: every request goes through ``_request``,
which counts it in ``api_calls`` under an operation name (one count per request or page, token
requests not counted), waits out a throttled answer (429/503 with Retry-After up to
``maxThrottleWait``, the platform's budget paused meanwhile) and maps errors to the contract's
types; a longer Retry-After becomes ``RetryableError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from platforms.azure.auth import AsyncCredential, make_credential
from platforms.azure.errors import ThrottledError, arm_error, graph_error
from platforms.azure.names import DEFAULT_GRAPH
from platforms.azure.options import AzureOptions
from platforms.contract import PendingError, PlatformConfigError, PlatformError, RetryableError
from platforms.kit.driver import BaseDriver
from platforms.kit.errors import NotFoundError
from platforms.kit.http import tls_verify
from platforms.kit.paging import Pages

T = TypeVar("T")

_DEFAULT_ARM = "https://management.azure.com"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class AzureCalls(BaseDriver[AzureOptions], platform_name="azure"):
    """The Graph and ARM plumbing of :class:`~platforms.azure.driver.AzureDriver`."""

    def _setup(self) -> None:
        super()._setup()
        self._setup_lock = threading.Lock()
        self._credential: Any = None
        self._graph_client: Any = None
        self._graph_http: Any = None
        self._graph_loop: asyncio.AbstractEventLoop | None = None
        self._arm_client: Any = None
        self._born: dict[str, float] = {}
        """Lower-case id -> creation time (epoch seconds) of the groups and guests this replicator
        created, as far as this instance knows (its own creates, the store's records)."""

    def _note_created(self, object_id: str, when: float | None = None) -> None:
        """Remember that ``object_id`` was created at ``when`` (now when None)."""
        self._born[object_id.lower()] = time.time() if when is None else when

    def _young(self, *object_ids: str) -> bool:
        """True when one of ``object_ids`` was created by us within ``consistencyWindow``: Entra ID
        or ARM not knowing it is lag, not absence."""
        window = self.options.consistency_window
        now = time.time()
        return any(now - self._born.get(i.lower(), float("-inf")) < window for i in object_ids)

    def _age(self, object_id: str) -> str:
        """How long ago ``object_id`` was created, for messages."""
        born = self._born.get(object_id.lower())
        return "at an unknown time" if born is None else f"{max(0.0, time.time() - born):.0f} s ago"

    def _credentials(self) -> Any:
        with self._setup_lock:
            if self._credential is None:
                self._credential = make_credential(self.identifier, self.options)
            return self._credential

    def _graph(self) -> Any:
        """The msgraph client of the running event loop (one client per loop)."""
        loop = asyncio.get_running_loop()
        if self._graph_client is not None and self._graph_loop is loop:
            return self._graph_client
        import httpx
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from kiota_http.middleware.options import RedirectHandlerOption, RetryHandlerOption
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_service_client import GraphServiceClient
        from msgraph_core import GraphClientFactory

        opts = self.options
        root = (opts.graph_url or DEFAULT_GRAPH).rstrip("/")
        host = urlparse(root).hostname or ""
        http = httpx.AsyncClient(timeout=httpx.Timeout(opts.timeout), verify=tls_verify(True, opts.ca_file))
        # Our own retry layer handles throttling (the SDK's gives up on long waits, and does not
        # pause the platform's budget); Graph does not redirect the calls made here.
        middleware_options: dict[str, Any] = {
            RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0, should_retry=False),
            RedirectHandlerOption.get_key(): RedirectHandlerOption(should_redirect=False),
        }
        http = GraphClientFactory.create_with_default_middleware(client=http, options=middleware_options)
        auth = AzureIdentityAuthenticationProvider(
            AsyncCredential(self._credentials()),  # type: ignore[arg-type]
            scopes=[f"{root}/.default"],
            allowed_hosts=[host],
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = f"{root}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        self._graph_http, self._graph_client, self._graph_loop = http, client, loop
        return client

    def _arm(self, subscription_id: str) -> Any:
        with self._setup_lock:
            if self._arm_client is None:
                self._arm_client = self._make_arm(subscription_id)
            return self._arm_client

    def _make_arm(self, subscription_id: str) -> Any:
        from azure.mgmt.authorization import AuthorizationManagementClient

        opts = self.options
        root = (opts.arm_url or _DEFAULT_ARM).rstrip("/")
        kwargs: dict[str, Any] = {
            "base_url": root,
            "credential_scopes": [f"{root}/.default"],
            "retry_total": 0,  # throttling and transient errors: _request
            "connection_timeout": opts.timeout,
            "read_timeout": opts.timeout,
        }
        if opts.ca_file:
            kwargs["connection_verify"] = opts.ca_file
        if urlparse(root).scheme == "http" and urlparse(root).hostname in _LOCAL_HOSTS:
            kwargs["enforce_https"] = False  # a local emulator only: never a token over http elsewhere
        if self._credential is None:  # _credentials() runs first
            raise PlatformConfigError(f"{self.identifier}: no credential")
        return AuthorizationManagementClient(self._credential, subscription_id, **kwargs)

    async def _request(
        self, operation: str, call: Callable[[], Awaitable[T]], translate: Callable[[str, Exception], Any]
    ) -> T:
        """One request within the platform's budget: counted, a short Retry-After waited out and
        the request repeated, errors mapped to the contract's types."""
        attempt = 0
        while True:
            attempt += 1
            self._count(operation)
            async with self.budget:
                try:
                    return await call()
                except PlatformError as exc:
                    error: PlatformError = exc
                except Exception as exc:
                    mapped = translate(operation, exc)
                    if mapped is None:
                        raise
                    error = mapped
            if isinstance(error, RetryableError) and error.retry_after is not None:
                self.budget.pause(error.retry_after)
            if not isinstance(error, ThrottledError):
                raise error
            wait = error.retry_after if error.retry_after is not None else min(2.0**attempt, 30.0)
            if wait > self.options.max_throttle_wait or attempt >= self.options.throttle_attempts:
                raise RetryableError(
                    f"{error} (throttled; retry after {wait:g} s)", retry_after=wait
                ) from None
            await asyncio.sleep(wait)

    async def _graph_call(self, operation: str, call: Callable[[Any], Awaitable[T]]) -> T:
        async def run() -> T:
            return await call(self._graph())

        if self._credential is None:
            await asyncio.to_thread(self._credentials)
        return await self._request(operation, run, graph_error)

    async def _arm_call(self, operation: str, subscription_id: str, call: Callable[[Any], T]) -> T:
        if self._arm_client is None:  # the first one imports the SDK: not in the event loop
            await asyncio.to_thread(self._credentials)
            await asyncio.to_thread(self._arm, subscription_id)
        client = self._arm(subscription_id)

        async def run() -> T:
            return await asyncio.to_thread(call, client)

        return await self._request(operation, run, arm_error)

    async def _graph_pages(
        self, operation: str, first: Callable[[Any], Awaitable[Any]], builder: Callable[[Any], Any]
    ) -> list[Any]:
        """Every item of a Graph list: ``@odata.nextLink`` followed to the end (each page counted)."""

        async def fetch(link: str | None) -> Any:
            if link is None:
                return await self._graph_call(operation, first)

            async def following(client: Any) -> Any:
                return await builder(client).with_url(link).get()

            return await self._graph_call(operation, following)

        def next_link(page: Any) -> str | None:
            return page.odata_next_link if page is not None else None

        items: list[Any] = []
        async for page in Pages(
            fetch, next_link, f"azure graph {operation}: the server repeated a next link"
        ):
            items.extend((page.value if page is not None else None) or [])
        return items

    async def _eventually(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        unknown: type[NotFoundError] = NotFoundError,
        young: bool = False,
    ) -> T:
        """``call`` while Entra ID does not know a just-created object yet (``unknown``: Graph's 404
        or 400 "do not exist", ARM's PrincipalNotFound): a few attempts with a short, doubling wait.
        Then, for an object we created a moment ago (``young``), :class:`PendingError`: the
        platform has not caught up, the tenant is requeued, not failed; for any other object the
        lag is no explanation: :class:`RetryableError` (the tenant fails for this run)."""
        wait = self.options.consistency_wait
        for attempt in range(1, self.options.consistency_attempts + 1):
            try:
                return await call()
            except unknown as exc:
                if attempt >= self.options.consistency_attempts:
                    note = (
                        f"{what}: not visible after {attempt} attempts; Entra ID replicates new "
                        "objects with a delay"
                    )
                    if young:
                        raise PendingError(
                            f"{exc} ({note})", retry_after=self.options.pending_retry_after
                        ) from None
                    raise RetryableError(f"{exc} ({note})") from None
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        http, self._graph_http, self._graph_client = self._graph_http, None, None
        if http is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is gone: nothing left to release
                await http.aclose()
        with self._setup_lock:
            arm, self._arm_client = self._arm_client, None
            credential, self._credential = self._credential, None
        if arm is not None:
            await asyncio.to_thread(arm.close)
        if credential is not None and hasattr(credential, "close"):
            await asyncio.to_thread(credential.close)
