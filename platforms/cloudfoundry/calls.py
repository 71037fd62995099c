"""How the Cloud Foundry driver talks to the Cloud Controller and UAA.

HTTP goes through httpx (async) with the UAA client-credentials flow: the token is cached until
shortly before ``expires_in`` and fetched again once on a 401. Every request is made inside
``async with self.budget:`` and counted in ``api_calls`` under an operation
name (one count per request, including the token request). httpx is imported lazily, so
importing this package is cheap.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from platforms.cloudfoundry.options import CloudFoundryOptions
from platforms.contract import PendingError, PermanentError, PlatformConfigError, RetryableError
from platforms.kit.driver import BaseDriver
from platforms.kit.errors import NotFoundError, error_for_status
from platforms.kit.http import Headers, retry_after, tls_verify
from platforms.kit.paging import Pages

if TYPE_CHECKING:
    import httpx

Query = Mapping[str, str]
"""Query parameters of a Cloud Controller request."""

TOKEN_MARGIN = 60.0
"""Seconds before ``expires_in`` at which a cached token is fetched again (at most half its life)."""
EPOCH_FLOOR = 1e9
"""A Retry-After of this many seconds or more (2001 as an epoch) is an epoch second, not a delay."""
RUNNING_JOB_STATES = ("PROCESSING", "POLLING")
"""A job's states before ``COMPLETE`` or ``FAILED`` (v3 docs "The job object"; POLLING: waiting
on an external resource)."""


def throttle_wait(headers: Headers) -> float | None:
    """Seconds until Cloud Foundry's rate limiter lets us in again. Its 429 carries
    ``X-RateLimit-Reset``, the end of the window in UTC epoch seconds, *truncated*
    (cloud_controller_ng middleware/rate_limiter.rb: ``valid_until.utc.to_i``), and a
    ``Retry-After`` set to that same epoch value rather than to a delay; some answers carry only
    X-RateLimit-Reset. So an epoch-sized Retry-After, or one equal to X-RateLimit-Reset, is read as
    the reset time, and one second is added to a reset time for the truncation. Anything else is
    an ordinary Retry-After (seconds or HTTP-date: a UAA rate limit answers ``rand(5..20)``)."""
    delay, reset = _number(headers.get("retry-after")), _number(headers.get("x-ratelimit-reset"))
    if delay is not None and delay < EPOCH_FLOOR and delay != reset:
        return max(0.0, delay)  # an ordinary Retry-After in seconds
    if delay is None and headers.get("retry-after"):
        return retry_after(headers)  # an HTTP-date (None when unreadable)
    epoch = delay if delay is not None else reset
    return None if epoch is None else max(0.0, epoch + 1.0 - time.time())


def _number(value: object) -> float | None:
    try:
        return float(str(value).strip()) if value else None
    except ValueError:
        return None


class UnprocessableError(PermanentError):
    """HTTP 422 with CF's detail (a duplicate role, a missing org role, ...)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def error_detail(body: Any) -> str:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return str(first.get("detail") or first.get("title") or "")
        if "error_description" in body:  # UAA
            return str(body.get("error_description") or "")
    return ""


class CloudFoundryCalls(BaseDriver[CloudFoundryOptions], platform_name="cloudfoundry"):
    """The HTTP plumbing of :class:`~platforms.cloudfoundry.driver.CloudFoundryDriver`."""

    def _setup(self) -> None:
        super()._setup()
        self._http: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self._uaa_url: str | None = self.options.uaa_url

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            opts = self.options
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(opts.timeout),
                verify=tls_verify(opts.verify_tls, opts.ca_file),
                headers={"Accept": "application/json"},
            )
        return self._http

    def _url(self, path: str) -> str:
        """``apiUrl`` + path. A link CF gave (``pagination.next``, a job's ``Location``) is taken
        by its path and query only, so the token never goes to a host other than ``apiUrl``
        (and a Cloud Controller behind a proxy that names its external host still works)."""
        if path.startswith(("http://", "https://")):
            base, link = urllib.parse.urlsplit(self.options.api_url), urllib.parse.urlsplit(path)
            return urllib.parse.urlunsplit((base.scheme, base.netloc, link.path, link.query, ""))
        return self.options.api_url.rstrip("/") + path

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """One request inside the budget, counted; transport errors and throttling mapped."""
        import httpx

        headers = {"Authorization": f"bearer {token}"} if token else {}
        async with self.budget:
            self._count(operation)
            try:
                resp = await self._client().request(
                    method, url, params=params, json=json, data=data, auth=auth, headers=headers
                )
            except httpx.TimeoutException as exc:
                raise RetryableError(f"cloudfoundry {operation}: timed out ({type(exc).__name__})") from None
            except httpx.ConnectError as exc:
                if "[SSL" in str(exc):  # certificate refused, or TLS spoken to a plain-HTTP port
                    raise PlatformConfigError(f"cloudfoundry {operation}: TLS: {exc}") from None
                raise RetryableError(f"cloudfoundry {operation}: cannot reach the server: {exc}") from None
            except httpx.TransportError as exc:
                raise RetryableError(f"cloudfoundry {operation}: cannot reach the server: {exc}") from None
            if resp.status_code == 429 or resp.status_code >= 500:
                wait = throttle_wait(resp.headers)
                if wait:
                    self.budget.pause(wait)
                detail = error_detail(self._json(resp))
                raise RetryableError(
                    f"cloudfoundry {operation}: HTTP {resp.status_code}" + (f": {detail}" if detail else ""),
                    retry_after=wait,
                )
            return resp

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    async def _uaa(self) -> str:
        """UAA's URL: configured, or read once from the Cloud Controller's root (called with the
        token lock held, so once per driver)."""
        if self._uaa_url is None:
            resp = await self._send("get_root", "GET", self._url("/"))
            body = self._json(resp) if resp.status_code == 200 else None
            links = body.get("links") if isinstance(body, dict) else None
            link = None
            if isinstance(links, dict):
                link = (links.get("uaa") or links.get("login") or {}).get("href")
            if not link:
                raise PlatformConfigError(
                    f"cloudfoundry: {self.options.api_url} names no UAA (links.uaa): set uaaUrl"
                )
            self._uaa_url = str(link)
        return self._uaa_url

    async def _access_token(self, stale: str | None = None) -> str:
        """The cached token, or a new one when it expires soon or ``stale`` was refused."""
        async with self._token_lock:
            if self._token is not None and self._token != stale and time.monotonic() < self._token_expires:
                return self._token
            try:
                secret = self.options.client_secret.resolve()
            except ValueError as exc:  # names where the secret is, never its value
                raise PlatformConfigError(f"{self.identifier}: clientSecret: {exc}") from None
            uaa = await self._uaa()
            resp = await self._send(
                "uaa_token",
                "POST",
                uaa.rstrip("/") + "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(self.options.client_id, secret),
            )
            body = self._json(resp)
            if resp.status_code in (400, 401, 403):
                raise PlatformConfigError(
                    f"cloudfoundry: UAA refused the client credentials of {self.options.client_id!r} "
                    f"(HTTP {resp.status_code}{': ' + error_detail(body) if error_detail(body) else ''})"
                )
            if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
                raise PermanentError(f"cloudfoundry uaa_token: unexpected answer (HTTP {resp.status_code})")
            lifetime = float(body.get("expires_in") or 0)
            self._token = str(body["access_token"])
            self._token_expires = time.monotonic() + lifetime - min(TOKEN_MARGIN, lifetime / 2)
            return self._token

    async def _call(
        self, operation: str, method: str, path: str, params: Query | None = None, body: Any = None
    ) -> httpx.Response:
        """One Cloud Controller request with a token (fetched again once on a 401); 4xx mapped,
        except that callers see 404 and 422 as their own types."""
        token = await self._access_token()
        resp = await self._send(operation, method, self._url(path), params=params, json=body, token=token)
        if resp.status_code == 401:
            token = await self._access_token(stale=token)
            resp = await self._send(operation, method, self._url(path), params=params, json=body, token=token)
        status = resp.status_code
        if status < 400:
            return resp
        detail = error_detail(self._json(resp))
        message = f"cloudfoundry {operation}: HTTP {status}" + (f": {detail}" if detail else "")
        if status == 401:
            raise PlatformConfigError(message + " (the token was refused twice)")
        if status == 422:
            raise UnprocessableError(message, detail)
        raise error_for_status(status, message)

    async def _list(
        self, operation: str, path: str, params: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every resource of a list (``pagination.next`` followed to the end) and the included
        users; fails rather than return part of it."""

        async def fetch(link: str | None) -> Any:
            if link:
                return self._json(await self._call(operation, "GET", link))
            query = {**params, "per_page": str(self.options.page_size)}
            return self._json(await self._call(operation, "GET", path, query))

        def next_link(page: dict[str, Any]) -> str | None:
            nxt = ((page.get("pagination") or {}).get("next") or {}).get("href")
            return str(nxt) if nxt else None

        resources: list[dict[str, Any]] = []
        users: list[dict[str, Any]] = []
        async for page in Pages(
            fetch, next_link, f"cloudfoundry {operation}: the server repeated a next link"
        ):
            if not isinstance(page, dict) or not isinstance(page.get("resources"), list):
                raise PermanentError(f"cloudfoundry {operation}: the answer is not a CF list")
            resources.extend(page["resources"])
            included = page.get("included")
            if isinstance(included, dict):
                users.extend(included.get("users") or [])
        return resources, users

    async def _wait_job(self, operation: str, location: str | None) -> None:
        """Poll a job until it ends: ``COMPLETE`` returns, ``FAILED`` is a PermanentError, a job
        still ``PROCESSING`` or ``POLLING`` after ``jobTimeout`` is a PendingError (CF has not
        finished our own write; the caller remembers the job and polls it again on the retry
        rather than asking twice). Another state is a PermanentError: we do not guess."""
        if not location:
            return  # no job to follow: CF deleted synchronously
        deadline = time.monotonic() + self.options.job_timeout
        interval = self.options.job_poll_interval
        while True:
            try:
                job = self._json(await self._call("get_job", "GET", location)) or {}
            except NotFoundError:
                return  # finished jobs are eventually pruned
            state = str(job.get("state") or "")
            if state == "COMPLETE":
                return
            if state == "FAILED":
                why = error_detail(job) or "no detail"
                raise PermanentError(f"cloudfoundry {operation}: job {job.get('guid')} failed: {why}")
            if state not in RUNNING_JOB_STATES:
                raise PermanentError(f"cloudfoundry {operation}: job {job.get('guid')} is in state {state!r}")
            if time.monotonic() + interval > deadline:
                raise PendingError(
                    f"cloudfoundry {operation}: job {job.get('guid')} still {state} after "
                    f"{self.options.job_timeout:g} s",
                    retry_after=max(interval, 1.0),
                )
            await asyncio.sleep(interval)
            interval = min(interval * 2, 5.0)

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
