"""How the GCP driver calls Google: discovery clients built from the bundled documents, one counted
request within the platform's budget, and paged lists.

Every request goes through ``_call``: within the platform's budget, in a worker thread
(googleapiclient is synchronous; each thread has its own ``httplib2.Http``, which is not
thread-safe), counted in ``api_calls`` under the discovery method name (one count per request or
page), errors mapped to the contract's types. googleapiclient's own retries are off
(``num_retries=0``): the engine retries a ``RetryableError`` after the Retry-After the platform
asked for, and that pause is shared by every worker through the budget instead of hidden in a
sleeping thread. google-api-python-client is imported lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from platforms.contract import PlatformConfigError, PlatformError, RetryableError
from platforms.gcp.auth import load_credentials
from platforms.gcp.errors import http_error
from platforms.gcp.options import GcpOptions
from platforms.kit.driver import BaseDriver
from platforms.kit.paging import Pages

_VERSIONS = {"cloudidentity": "v1", "admin": "directory_v1", "cloudresourcemanager": "v3"}


class GcpCalls(BaseDriver[GcpOptions], platform_name="gcp"):
    """The Google API plumbing of :class:`~platforms.gcp.driver.GcpDriver`."""

    def _setup(self) -> None:
        super()._setup()
        self._build_lock = threading.Lock()
        self._local = threading.local()
        self._credentials: dict[str, Any] | None = None
        self._services: dict[str, Any] = {}
        self._https: list[Any] = []
        """Every worker thread's connections, closed by :meth:`close`."""

    def _service(self, api: str) -> Any:
        """The discovery client of ``api``, built once from the bundled document (no network)."""
        with self._build_lock:
            if self._credentials is None:
                self._credentials = load_credentials(self.identifier, self.options)
            if api not in self._services:
                from googleapiclient.discovery import build

                endpoint = getattr(self.options.endpoints, api)
                client_options = {"api_endpoint": endpoint} if endpoint else None
                self._services[api] = build(
                    api,
                    _VERSIONS[api],
                    credentials=self._credentials[api],
                    static_discovery=True,
                    cache_discovery=False,
                    client_options=client_options,
                )
            return self._services[api]

    def _http(self, api: str) -> Any:
        """This thread's authorised ``httplib2.Http`` for ``api`` (httplib2 is not thread-safe)."""
        per_thread: dict[str, Any] | None = getattr(self._local, "http", None)
        if per_thread is None:
            per_thread = self._local.http = {}
        if api not in per_thread:
            import google_auth_httplib2
            import httplib2

            assert self._credentials is not None
            per_thread[api] = google_auth_httplib2.AuthorizedHttp(
                self._credentials[api], http=httplib2.Http(timeout=self.options.timeout)
            )
            with self._build_lock:
                self._https.append(per_thread[api])
        return per_thread[api]

    def _call_sync(self, api: str, operation: str, request: Callable[[Any], Any]) -> Any:
        import google.auth.exceptions
        import httplib2
        from googleapiclient.errors import HttpError

        self._count(operation)
        try:
            service = self._service(api)
            return request(service).execute(http=self._http(api), num_retries=0)
        except PlatformError:
            raise
        except HttpError as exc:
            raise http_error(operation, exc) from None
        except google.auth.exceptions.RefreshError as exc:
            raise PlatformConfigError(f"gcp {operation}: cannot obtain an access token: {exc}") from None
        except google.auth.exceptions.TransportError as exc:
            raise RetryableError(f"gcp {operation}: cannot reach the token endpoint: {exc}") from None
        except google.auth.exceptions.GoogleAuthError as exc:
            raise PlatformConfigError(f"gcp {operation}: credentials: {exc}") from None
        except (TimeoutError, ConnectionError, httplib2.HttpLib2Error) as exc:
            raise RetryableError(f"gcp {operation}: cannot reach {api}: {exc}") from None
        except OSError as exc:
            raise RetryableError(f"gcp {operation}: {api}: {exc}") from None

    async def _call(self, api: str, operation: str, request: Callable[[Any], Any]) -> Any:
        """One request in a worker thread, within the platform's budget: counted, errors mapped to
        the contract's types, a Retry-After shared through the budget."""
        return await self._in_thread(self._call_sync, api, operation, request)

    def _paged(
        self, api: str, operation: str, request: Callable[[Any, str | None], Any], limit: int | None = None
    ) -> Pages[dict[str, Any]]:
        """The pages of a list (``nextPageToken`` followed; see :class:`~platforms.kit.Pages`)."""

        async def fetch(token: str | None) -> dict[str, Any]:
            page: dict[str, Any] = (
                await self._call(api, operation, lambda service: request(service, token)) or {}
            )
            return page

        repeated = f"gcp {operation}: the server repeated a page token"
        return Pages(fetch, lambda page: page.get("nextPageToken") or None, repeated, limit)

    async def _pages(
        self, api: str, operation: str, key: str, request: Callable[[Any, str | None], Any]
    ) -> list[dict[str, Any]]:
        """Every item of a paged list (``nextPageToken`` followed to the end) or an error."""
        return [item async for page in self._paged(api, operation, request) for item in page.get(key) or []]

    def _email(self, name: str) -> str:
        return f"{name}@{self.options.domain}".lower()

    async def close(self) -> None:
        with self._build_lock:
            services, self._services = self._services, {}
            https, self._https = self._https, []
        for service in services.values():
            service.close()
        for http in https:
            http.close()
