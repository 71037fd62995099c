"""How the OpenStack driver calls Keystone: an openstacksdk connection (password, application
credential or clouds.yaml), one counted request within the platform's budget, and whole lists.

Every Keystone request goes through ``_call``, which counts it in ``api_calls`` under an operation
name (one count per request; the token request and version discovery made by keystoneauth are not
counted) and maps errors to the contract's error types. Keystone lists are not paged (a
``list_limit`` cut is reported as ``truncated``, which fails the read rather than return part of
it); ``links.next`` is followed where a server sends it. openstacksdk is imported lazily.
"""

from __future__ import annotations

from typing import Any

from platforms.contract import PermanentError, PlatformConfigError, PlatformError
from platforms.kit.driver import BaseDriver
from platforms.kit.http import retry_after
from platforms.kit.paging import Pages
from platforms.kit.session import SharedClient
from platforms.openstack.errors import http_error, translate
from platforms.openstack.options import (
    ApplicationCredentials,
    CloudCredentials,
    OpenstackOptions,
    PasswordCredentials,
)


class OpenstackCalls(BaseDriver[OpenstackOptions], platform_name="openstack"):
    """The Keystone plumbing of :class:`~platforms.openstack.driver.OpenstackDriver`."""

    def _setup(self) -> None:
        super()._setup()
        self._conn = SharedClient(self._connect)

    async def close(self) -> None:
        conn = self._conn.take()
        if conn is not None:
            conn.close()

    def _connect(self) -> Any:
        import openstack.connection

        opts = self.options
        common: dict[str, Any] = {
            "verify": opts.ca_file if (opts.verify and opts.ca_file) else opts.verify,
            "interface": opts.interface,
            "api_timeout": opts.timeout,
        }
        if opts.region_name:
            common["region_name"] = opts.region_name
        if opts.endpoint_override:
            common["identity_endpoint_override"] = opts.endpoint_override
        creds = opts.credentials
        cloud = opts.cloud or (creds.cloud if isinstance(creds, CloudCredentials) else None)
        auth: dict[str, Any] = {"auth_url": opts.auth_url}
        auth_type = "v3password"
        try:
            if isinstance(creds, PasswordCredentials):
                auth.update(
                    username=creds.username,
                    password=creds.password.resolve(),
                    user_domain_name=creds.user_domain,
                    project_name=creds.project_name,
                    project_domain_name=creds.project_domain,
                )
            elif isinstance(creds, ApplicationCredentials):
                auth.update(
                    application_credential_id=creds.application_credential_id,
                    application_credential_secret=creds.application_credential_secret.resolve(),
                )
                auth_type = "v3applicationcredential"
        except ValueError as exc:  # SecretRef.resolve: names where the secret is, never its value
            raise PlatformConfigError(f"{self.identifier}: credentials: {exc}") from None
        try:
            if cloud is not None:
                return openstack.connection.Connection(cloud=cloud, **common)
            return openstack.connection.Connection(
                auth_type=auth_type,
                auth=auth,
                **common,  # no cloud: clouds.yaml and OS_* are not read
            )
        except PlatformError:
            raise
        except Exception as exc:
            mapped = translate("connect", exc)
            if mapped is None:
                raise
            raise mapped from None

    def _call_sync(
        self, operation: str, method: str, path: str, params: dict[str, Any] | None, body: Any
    ) -> Any:
        self._count(operation)
        try:
            identity = self._conn.get().identity
            kwargs: dict[str, Any] = {"raise_exc": False}
            if params:
                kwargs["params"] = params
            if body is not None:
                kwargs["json"] = body
            resp = identity.request(path, method, **kwargs)
        except PlatformError:
            raise
        except Exception as exc:
            mapped = translate(operation, exc)
            if mapped is None:
                raise
            raise mapped from None
        status = int(resp.status_code)
        if status >= 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = None
            raise http_error(operation, status, payload, retry_after(resp.headers))
        if status == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise PermanentError(f"openstack {operation}: the answer is not JSON") from exc

    async def _call(
        self, operation: str, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """One Keystone request in a worker thread, within the platform's budget: counted, errors
        mapped to the contract's types."""
        return await self._in_thread(self._call_sync, operation, method, path, params, body)

    async def _list(
        self, operation: str, path: str, key: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Every item of a list; fails rather than return a truncated list."""

        async def fetch(link: str | None) -> dict[str, Any]:
            page = await (
                self._call(operation, "GET", link) if link else self._call(operation, "GET", path, params)
            )
            return page or {}

        def next_link(page: dict[str, Any]) -> str | None:
            return (page.get("links") or {}).get("next")

        items: list[dict[str, Any]] = []
        async for page in Pages(fetch, next_link, f"openstack {operation}: the server repeated a next link"):
            if page.get("truncated"):
                raise PermanentError(
                    f"openstack {operation}: Keystone truncated the list (list_limit): cannot read it whole"
                )
            items.extend(page.get(key) or [])
        return items
