"""What the Kubernetes and OpenShift drivers share: the API client (the ``kubernetes`` package's REST
layer with plain dict manifests, imported lazily), one counted request within the platform's
budget, namespaces, and our RoleBindings."""

from __future__ import annotations

import contextlib
import json
import os
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from platforms.contract import (
    ForeignObjectError,
    ObservedGroup,
    PlatformConfigError,
    PlatformError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.kit.driver import BaseDriver
from platforms.kit.errors import ConflictError, NotFoundError, error_for_status
from platforms.kit.http import retry_after
from platforms.kit.session import SharedClient
from platforms.kubernetes.errors import translate
from platforms.kubernetes.objects import (
    FIELD_MANAGER,
    RBAC,
    RBAC_PATH,
    group_of,
    is_ours,
    is_ours_as,
    is_ours_for,
    meta,
    names_group,
    owner_metadata,
    role_id,
    role_ref,
    short_hash,
    subject_keys,
)
from platforms.kubernetes.options import KubernetesOptions


class RbacDriver(BaseDriver[KubernetesOptions]):
    """The HTTP plumbing and the RoleBindings both drivers share."""

    platform_name: ClassVar[str] = "kubernetes"
    role_noun = "ClusterRole"
    needs_group_id = False
    strips_foreign_bindings: ClassVar[bool] = False
    """Revoke also takes the group out of foreign bindings that grant the role (OpenShift, where
    roles granted to the Group by anyone count as the group's roles)."""

    def _setup(self) -> None:
        super()._setup()
        self._api = SharedClient(self._make_client)
        self._namespaces: set[str] = set()

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        return {euid: (PlatformUser(id=euid, name=euid),) for euid in euids}

    def _client(self) -> Any:
        return self._api.get()

    def _make_client(self) -> Any:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        opts = self.options
        cfg = client.Configuration()
        try:
            if opts.server is not None:
                cfg.host = opts.server.rstrip("/")
                if opts.token is not None:
                    cfg.api_key = {"BearerToken": opts.token.resolve()}
                    cfg.api_key_prefix = {"BearerToken": "Bearer"}
            elif opts.kubeconfig is not None:
                load_kube_config: Any = config.load_kube_config  # untyped in the package
                load_kube_config(
                    config_file=os.path.expanduser(opts.kubeconfig),
                    context=opts.context,
                    client_configuration=cfg,
                )
            else:
                load_incluster_config: Any = config.load_incluster_config
                load_incluster_config(client_configuration=cfg)
        except (ConfigException, ValueError, OSError) as exc:
            raise PlatformConfigError(
                f"{self.identifier}: cannot configure the kubernetes client: {exc}"
            ) from exc
        if opts.ca_file is not None:
            cfg.ssl_ca_cert = os.path.expanduser(opts.ca_file)
        import urllib3

        # urllib3's default Retry repeats a 429/503 that carries Retry-After by itself, sleeping in
        # the worker thread: the driver would never see the throttling, and the shared budget
        # would never pause for the other workers. Connection failures are still retried (the
        # request was not sent); a throttled answer reaches the driver as a RetryableError.
        cfg.retries = urllib3.Retry(
            total=3, status=0, respect_retry_after_header=False, raise_on_status=False
        )
        if opts.insecure_skip_tls_verify:
            cfg.verify_ssl = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return client.ApiClient(cfg)

    def _request_sync(
        self, what: str, method: str, path: str, query: Sequence[tuple[str, str]], body: Any
    ) -> Any:
        self._count(what)
        try:
            api = self._client()
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            method_, url, hdrs, body_, post = api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = api.call_api(
                method_, url, hdrs, body_, post, _request_timeout=self.options.request_timeout
            )
            data = resp.read()
        except PlatformError:
            raise
        except Exception as exc:
            mapped = translate(f"{method} {path}", exc)
            if mapped is None:
                raise
            raise mapped from exc
        status = int(resp.status)
        if status < 400:
            return json.loads(data) if data else None
        try:
            message = json.loads(data).get("message", "")
        except (ValueError, AttributeError):
            message = (data or b"")[:300].decode(errors="replace")
        text = f"kubernetes {method} {path}: HTTP {status}" + (f": {message}" if message else "")
        if status == 409 and method != "POST":
            raise RetryableError(text)  # the object changed since we read it: read again
        raise error_for_status(status, text, retry_after(resp.headers))

    async def _request(
        self,
        what: str,
        method: str,
        path: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> Any:
        """One API request in a worker thread within the platform's budget: counted, errors mapped."""
        return await self._in_thread(self._request_sync, what, method, path, query, body)

    async def _get(self, what: str, path: str) -> Any:
        """The object, or None when it does not exist."""
        try:
            return await self._request(f"GET {what}", "GET", path)
        except NotFoundError:
            return None

    async def _delete(self, what: str, path: str) -> None:
        try:
            await self._request(f"DELETE {what}", "DELETE", path)
        except NotFoundError:
            return

    def _write_query(self) -> list[tuple[str, str]]:
        return [("fieldManager", FIELD_MANAGER)]

    async def _ensure_namespace(self, namespace: str) -> None:
        if not self.options.create_namespaces or namespace in self._namespaces:
            return
        if await self._get("namespaces", f"/api/v1/namespaces/{namespace}") is None:
            with contextlib.suppress(ConflictError):
                await self._request(
                    "POST namespaces",
                    "POST",
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                    self._write_query(),
                )
        self._namespaces.add(namespace)

    # --- role bindings --------------------------------------------------------------------------

    def _bindings_path(self, tenant: TenantRef) -> str:
        return f"{RBAC_PATH}/namespaces/{tenant.local_id}/rolebindings"

    async def _list_bindings(self, tenant: TenantRef, selector: str | None) -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        doc = await self._request("LIST rolebindings", "GET", self._bindings_path(tenant), query=query)
        items: list[dict[str, Any]] = (doc or {}).get("items") or []
        return items

    def _binding(
        self, tenant: TenantRef, name: str, group: str, role: str, subjects: list[dict[str, str]]
    ) -> dict[str, Any]:
        metadata = owner_metadata(name, tenant, group)
        metadata["namespace"] = tenant.local_id
        return {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": role_ref(role),
            "subjects": subjects,
        }

    async def _create_binding(
        self,
        tenant: TenantRef,
        group: str,
        role: str,
        subjects: list[dict[str, str]],
        taken: set[str],
    ) -> None:
        """Create the binding of ``role`` for ``group``: named ``<group>`` when free, else
        ``<group>-<hash of role>``."""
        names = [group, f"{group}-{short_hash(role)}"]
        for name in names:
            if name in taken:
                continue
            try:
                await self._request(
                    "POST rolebindings",
                    "POST",
                    self._bindings_path(tenant),
                    self._binding(tenant, name, group, role, subjects),
                    self._write_query(),
                )
                return
            except ConflictError:
                existing = await self._get("rolebindings", f"{self._bindings_path(tenant)}/{name}")
                if (
                    existing is not None
                    and is_ours_for(existing, tenant)
                    and group_of(existing) == group
                    and role_id(existing) == role
                ):
                    await self._put_subjects(tenant, existing, subjects)
                    return
        raise ForeignObjectError(
            f"kubernetes: cannot bind {role!r} for {group!r} in {tenant.local_id}: "
            f"the binding names {', '.join(names)} are taken by objects that are not ours"
        )

    async def _put_subjects(
        self, tenant: TenantRef, binding: Mapping[str, Any], subjects: list[dict[str, str]]
    ) -> None:
        if subject_keys(binding.get("subjects") or []) == subject_keys(subjects):
            return
        body = {**binding, "subjects": subjects}
        await self._request(
            "PUT rolebindings",
            "PUT",
            f"{self._bindings_path(tenant)}/{meta(binding)['name']}",
            body,
            self._write_query(),
        )

    async def _revoke_bindings(self, tenant: TenantRef, group: str, role: str | None) -> None:
        """Delete our bindings of ``group`` (for ``role``, or all); strip the Group subject from
        foreign bindings of ``role`` that name it (OpenShift external grants)."""
        for b in await self._list_bindings(tenant, None):
            if role is not None and role_id(b) != role:
                continue
            name = meta(b).get("name", "")
            if is_ours(b) and group_of(b) == group:
                await self._delete("rolebindings", f"{self._bindings_path(tenant)}/{name}")
            elif (
                self.strips_foreign_bindings and role is not None and not is_ours(b) and names_group(b, group)
            ):
                rest = [
                    s
                    for s in b.get("subjects") or []
                    if not (s.get("kind") == "Group" and s.get("name") == group)
                ]
                await self._request(
                    "PUT rolebindings",
                    "PUT",
                    f"{self._bindings_path(tenant)}/{name}",
                    {**b, "subjects": rest},
                    self._write_query(),
                )

    # --- the group's own object (ConfigMap anchor, OpenShift Group) ------------------------------

    async def _add_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        await self._change_member(tenant, group, user.name, add=True)

    async def _remove_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        await self._change_member(tenant, group, user.name, add=False)

    @abstractmethod
    async def _change_member(self, tenant: TenantRef, name: str, user: str, add: bool) -> None:
        """Add ``user`` to the group's object (or take them out), and to its bindings' subjects."""

    async def _revoke(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        await self._revoke_bindings(tenant, group, role)

    async def _create_object(
        self,
        tenant: TenantRef,
        name: str,
        kind: tuple[str, str],
        path: str,
        content: dict[str, Any],
        read: Callable[[], Awaitable[dict[str, Any] | None]],
        gone: str,
        foreign: str,
    ) -> str:
        """POST the group's object (``kind``: its apiVersion and kind, ``content``: what it holds
        besides our metadata) and return its uid; on a conflict the existing object is taken when
        it is ours for this tenant (``foreign`` otherwise, ``gone`` when it disappeared meanwhile)."""
        await self._ensure_namespace(tenant.local_id)
        api_version, kind_name = kind
        body = {"apiVersion": api_version, "kind": kind_name, "metadata": owner_metadata(name, tenant, name)}
        try:
            created = await self._request(
                f"POST {kind_name.lower()}s", "POST", path, {**body, **content}, self._write_query()
            )
        except ConflictError:
            existing = await read()
            if existing is None:
                raise RetryableError(gone) from None
            if not is_ours_for(existing, tenant):
                raise ForeignObjectError(foreign) from None
            created = existing
        return str(meta(created)["uid"])

    @staticmethod
    def _owned(obj: dict[str, Any] | None, gone: str, foreign: str) -> dict[str, Any]:
        """The group's object for a change: gone is retryable (the next run recreates it), not ours
        is foreign."""
        if obj is None:
            raise RetryableError(gone)
        if not is_ours(obj):
            raise ForeignObjectError(foreign)
        return obj

    async def _delete_object(
        self,
        tenant: TenantRef,
        name: str,
        group_id: str | None,
        obj: dict[str, Any] | None,
        what: str,
        path: str,
        foreign: str,
    ) -> None:
        """Delete the group's bindings and then its object (``obj``, read by the caller), when the
        object is ours (by the label when the store has its id, else by the tenant annotation)."""
        if obj is not None and not is_ours_as(obj, tenant, recorded=group_id is not None):
            raise ForeignObjectError(foreign)
        await self._revoke_bindings(tenant, name, None)
        if obj is not None:
            await self._delete(what, path)

    @staticmethod
    def _observed(
        obj: Mapping[str, Any], alias: str, members: Iterable[str], roles: Iterable[str]
    ) -> ObservedGroup:
        """The observation of a group whose object (anchor or Group) is ``obj``."""
        return ObservedGroup(
            id=str(meta(obj)["uid"]),
            name=str(meta(obj)["name"]),
            alias=alias,
            members=frozenset(PlatformUser(m, m) for m in members),
            roles=frozenset(roles),
        )

    async def close(self) -> None:
        api = self._api.take()
        if api is not None:
            api.close()
