"""How the AWS driver calls AWS: boto3 clients (assumed role included), one counted call within the
platform's budget, and paged lists.

Every AWS call goes through ``_call``, which counts it in ``api_calls`` by its boto3 operation name
(one count per request/page; retries made by botocore itself are not counted there, but each is
paid from the platform's budget after the call, so ``schedule.rateLimits`` holds for every request
sent) and maps errors to the contract's error types. Lists are paged by hand (``NextToken``, 100
items a page) so every page is one counted call. boto3/botocore are imported lazily.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from platforms.aws.errors import retry_attempts, translate
from platforms.aws.options import AwsOptions
from platforms.contract import PlatformError
from platforms.kit.driver import BaseDriver
from platforms.kit.errors import NotFoundError
from platforms.kit.http import retry_after
from platforms.kit.paging import Pages
from platforms.kit.session import SharedClient

PAGE_SIZE = 100
"""Items a page of every list call."""
_SESSION_NAME = "replicator"


def _no_retry_when_told_how_long(response: Any = None, **_: Any) -> bool | None:
    """botocore's ``needs-retry`` hook: a throttled answer (429, 503) that says how long to wait
    (``Retry-After``) is not repeated by botocore, whose standard mode would repeat it after its
    own short backoff and past the platform's budget. It reaches the driver as a RetryableError
    with that wait instead, which pauses the budget for every caller. False stops botocore's
    retries for this answer; None leaves the decision to the standard retry handler."""
    if not isinstance(response, tuple) or not response:
        return None
    http = response[0]
    if getattr(http, "status_code", None) in (429, 503) and retry_after(getattr(http, "headers", None)):
        return False
    return None


class AwsCalls(BaseDriver[AwsOptions], platform_name="aws"):
    """The AWS plumbing of :class:`~platforms.aws.driver.AwsDriver`."""

    def _setup(self) -> None:
        super()._setup()
        self._clients = SharedClient(self._make_clients)

    def _client(self, service: str) -> Any:
        return self._clients.get()[service]

    async def close(self) -> None:
        for client in (self._clients.take() or {}).values():
            client.close()

    def _make_clients(self) -> dict[str, Any]:
        import boto3
        from botocore.config import Config

        opts = self.options
        config = Config(
            retries={"mode": "standard", "total_max_attempts": opts.max_attempts},
            user_agent_extra="replicator",
        )
        session = boto3.Session(region_name=opts.region)
        if opts.assume_role_arn:
            session = self._assumed_session(session, config, opts.assume_role_arn)
        clients = {
            service: session.client(
                service,
                region_name=opts.region,
                endpoint_url=opts.endpoint_url,
                config=config,
            )
            for service in ("identitystore", "sso-admin")
        }
        for client in clients.values():
            # First, so that its answer wins over the standard retry handler's. The stubs type
            # handlers as returning None; botocore reads a needs-retry handler's answer.
            hook: Any = _no_retry_when_told_how_long
            client.meta.events.register_first("needs-retry", hook)
        return clients

    def _assumed_session(self, base: Any, config: Any, role_arn: str) -> Any:
        """A session whose credentials come from ``sts:AssumeRole`` and refresh before they expire."""
        import boto3
        import botocore.session
        from botocore.credentials import DeferredRefreshableCredentials

        opts = self.options
        sts = base.client("sts", region_name=opts.region, endpoint_url=opts.endpoint_url, config=config)

        def fetch() -> dict[str, str]:
            self._count("assume_role")
            try:
                response = sts.assume_role(RoleArn=role_arn, RoleSessionName=_SESSION_NAME)
            except Exception as exc:
                mapped = translate("sts assume_role", exc)
                if mapped is None:
                    raise
                raise mapped from exc
            creds = response["Credentials"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        core = botocore.session.Session()
        # botocore has no public setter for a session's credentials; this is how boto3's own
        # assume-role providers hand refreshable credentials to a session.
        core._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
            refresh_using=fetch, method="sts-assume-role"
        )
        return boto3.Session(botocore_session=core, region_name=opts.region)

    def _call_sync(
        self, service: str, operation: str, params: dict[str, Any], retried: list[int]
    ) -> dict[str, Any]:
        self._count(operation)
        try:
            client = self._client(service)
            response: dict[str, Any] = getattr(client, operation)(**params)
        except PlatformError:
            raise
        except Exception as exc:
            retried[0] = retry_attempts(getattr(exc, "response", None))
            mapped = translate(operation, exc)
            if mapped is None:
                raise
            raise mapped from exc
        retried[0] = retry_attempts(response)
        return response

    async def _call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """One AWS call in a worker thread, within the platform's budget: counted, errors mapped to
        the contract's types. botocore's standard retry mode backs off on throttling by itself; the
        requests it repeated were sent outside the budget, so each is paid for after the call (the
        budget's rate then holds over time: the 1,000-tenant bench sent 2% more than its 20 req/s
        before). An answer that said how long to wait pauses the budget (``_in_thread``)."""
        retried = [0]
        try:
            return await self._in_thread(self._call_sync, service, operation, params, retried)
        finally:
            for _ in range(retried[0]):
                async with self.budget:
                    pass

    async def _store(self, operation: str, **params: Any) -> dict[str, Any]:
        """One identity store call."""
        return await self._call(
            "identitystore", operation, IdentityStoreId=self.options.identity_store_id, **params
        )

    async def _store_read(self, operation: str, **params: Any) -> dict[str, Any] | None:
        """One identity store read whose ResourceNotFoundException means "there is none": None."""
        try:
            return await self._store(operation, **params)
        except NotFoundError:
            return None

    def _paged(
        self, service: str, operation: str, limit: int | None = None, **params: Any
    ) -> Pages[dict[str, Any]]:
        """The pages of a list call, ``PAGE_SIZE`` items each (see :class:`~platforms.kit.Pages`)."""

        def page(token: str | None) -> Awaitable[dict[str, Any]]:
            extra = {"NextToken": token} if token else {}
            return self._call(service, operation, MaxResults=PAGE_SIZE, **params, **extra)

        repeated = f"aws {operation}: the service repeated a pagination token"
        return Pages(page, lambda p: p.get("NextToken"), repeated, limit)

    async def _store_pages(self, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of an identity store list."""
        return await self._pages(
            "identitystore", operation, key, IdentityStoreId=self.options.identity_store_id, **params
        )

    async def _assignments(self, operation: str, **params: Any) -> list[dict[str, Any]]:
        """Every account assignment a sso-admin list answers."""
        return await self._pages(
            "sso-admin", operation, "AccountAssignments", InstanceArn=self.options.instance_arn, **params
        )

    async def _pages(self, service: str, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list call (each page is one counted call)."""
        return [
            item async for page in self._paged(service, operation, **params) for item in page.get(key, [])
        ]
