"""Kubernetes and OpenShift drivers.

Kubernetes has no group objects, so the contract's "group" is mapped onto objects in the tenant's
namespace (the tenant's ``localId``):

* the **anchor**: a ConfigMap named after the group, labelled ``app.kubernetes.io/managed-by:
  replicator``, annotated with the tenant key and the group name; its ``data.members`` is the JSON
  list of member user names. The group's platform id is the anchor's ``metadata.uid``.
* one **RoleBinding** per ClusterRole granted to the group, carrying the same label/annotations.
  It is named ``<group>`` when that name is free, else ``<group>-<first 8 hex of sha256(role)>``
  (so a changed mapping can create the new binding before the old one is deleted: ``roleRef`` is
  immutable). Subjects: every member as ``kind: User`` (``subjects: user``), or the single
  ``kind: Group, name: <group>`` (``subjects: group``; then the cluster's authenticator decides who
  is in the group and the anchor's list is kept for reporting only).

``add_member``/``remove_member`` update the anchor and the subjects of every binding of the group;
``grant`` creates (or repairs the subjects of) the binding for a ClusterRole; ``revoke`` deletes it;
``delete_group`` deletes the bindings and then the anchor. ``observe`` reports members = anchor list
plus every ``User`` subject found on the group's bindings (an extra subject is thus removed by the
plan), and roles = the ``roleRef`` of every binding *whose subjects are complete* (a binding that
lost a subject is left out of the roles, so the plan grants it again, which repairs its subjects).
A deleted anchor makes the group "vanished": the plan recreates it.

OpenShift: the group is a cluster-scoped ``user.openshift.io/v1`` Group (``users: [...]``) named
after the group, labelled/annotated the same way; roles are RoleBindings in the project with the
single subject ``kind: Group``. The roles reported for a group are the roleRefs of *every*
RoleBinding in the project naming the Group (ours or not: external grants are kept by default).

Users: Kubernetes has no user objects (nor, for this driver, OpenShift: users appear at first
login), so ``lookup_users`` answers every euid with one ``PlatformUser(id=euid, name=euid)`` and
makes no call.

Ownership: an object counts as ours when it carries the managed-by label; an object found only by
name (a create the state store never confirmed) counts as ours only when the tenant annotation names
this tenant. Nothing else is ever changed or deleted (a foreign binding named like our group is
reported as FOREIGN_GROUP_NAME_TAKEN). Namespaces are created when ``createNamespaces`` is true and
never deleted.

Every request goes through ``_request`` (the ``kubernetes`` client's REST layer with plain dict
manifests, run in a worker thread, inside ``self.budget``), which counts it in ``api_calls`` by
``"<VERB> <kind>"`` and maps HTTP errors to the contract's error types. The ``kubernetes`` package is
imported lazily.

API calls (G groups of a tenant, B bindings of a group):

``lookup_users``  none.
``observe``       Kubernetes: ``LIST configmaps`` 1 + ``LIST rolebindings`` 1 per tenant (label
                  selector), + ``GET configmaps`` and ``GET rolebindings`` 1 each per desired name that
                  is not an owned group yet. OpenShift: ``LIST groups`` 1 (label selector on the tenant
                  hash) + ``LIST rolebindings`` 1, + ``GET groups`` 1 per new desired name.
                  A no-op observe is **2 calls per tenant** on both, whatever G.
``apply``         create_group: (+ namespace GET [+ POST] once per namespace with createNamespaces)
                  ``POST`` anchor/Group 1 (conflict: + ``GET`` 1).
                  add/remove_member (Kubernetes): ``GET`` anchor 1 + ``PUT`` anchor 1 (if changed)
                  + ``LIST rolebindings`` 1 + ``PUT`` per binding whose subjects change.
                  add/remove_member (OpenShift): ``GET group`` 1 + ``PUT group`` 1 (if changed).
                  grant: (Kubernetes: ``GET`` anchor 1) + ``LIST rolebindings`` 1 + ``POST`` 1
                  (name taken: + ``POST`` 1 with the hashed name), or ``PUT`` 1 to repair subjects.
                  revoke: ``LIST rolebindings`` 1 + ``DELETE`` per binding (OpenShift, foreign
                  binding: ``PUT`` without our subject).
                  delete_group: ``LIST rolebindings`` 1 + ``DELETE`` per binding + ``GET`` 1 +
                  ``DELETE`` 1 of the anchor/Group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import pydantic

from platforms.contract import (
    OPTIONS_CONFIG,
    Action,
    Capabilities,
    Change,
    Driver,
    ForeignObjectError,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.secrets import SecretRef

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "replicator"
TENANT_LABEL = "replicator.meshcloud.io/tenant-hash"
TENANT_ANNOTATION = "replicator.meshcloud.io/tenant"
GROUP_ANNOTATION = "replicator.meshcloud.io/group"
FIELD_MANAGER = "replicator"
RBAC = "rbac.authorization.k8s.io"
_RBAC_PATH = "/apis/rbac.authorization.k8s.io/v1"
_GROUPS_PATH = "/apis/user.openshift.io/v1/groups"

# DNS-1123 subdomain (ConfigMap, Group and RoleBinding names): lowercase alphanumerics, '-' and '.',
# starting and ending with an alphanumeric, at most 253 characters. Nine of them are kept for the
# "-<hash>" suffix of a second binding of the same group.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 253 - 9
# ClusterRole names are path segments: anything but '/' and '%', not '.' or '..'.
_ROLE_NAME = re.compile(r"(?!\.\.?$)[^/%]+")


class KubernetesOptions(pydantic.BaseModel):
    """The ``kubernetes:`` (or ``openshift:``) block of a platform in the config file. With neither
    ``kubeconfig`` nor ``server`` the driver uses the in-cluster service account."""

    model_config = OPTIONS_CONFIG

    kubeconfig: str | None = None
    """Path of a kubeconfig file to connect with."""
    context: str | None = None
    """The kubeconfig context to use (null: its current context)."""
    server: str | None = None
    """The API server URL, e.g. ``https://api.example.com:6443`` (instead of a kubeconfig)."""
    token: SecretRef | None = None
    """Bearer token for ``server``: ``{env: NAME}`` or ``{file: PATH}``."""
    ca_file: str | None = None
    """CA certificate (PEM) that signed the API server's certificate (null: the system's CAs)."""
    insecure_skip_tls_verify: bool = False
    """Do not verify the API server's certificate (tests only)."""
    subjects: Literal["user", "group"] = "user"
    """``user``: every member is a ``User`` subject of the RoleBindings; ``group``: each RoleBinding
    has the one subject ``Group <group name>`` and group membership is the authenticator's (OIDC)
    business (members are kept in the anchor for reporting). OpenShift always binds its Group."""
    create_namespaces: bool = False
    """Create a tenant's namespace (project) when it does not exist. Namespaces are never deleted."""
    request_timeout: float = pydantic.Field(default=30.0, gt=0)
    """Seconds one API request may take."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> KubernetesOptions:
        if self.server is None and self.token is not None:
            raise ValueError("token needs server")
        if self.server is not None and self.kubeconfig is not None:
            raise ValueError("give either kubeconfig (+ context) or server (+ token, caFile), not both")
        if self.context is not None and self.kubeconfig is None:
            raise ValueError("context needs kubeconfig")
        return self


class _NotFoundError(PermanentError):
    """HTTP 404: callers that expect it catch it."""


class _ConflictError(PermanentError):
    """HTTP 409 on create (AlreadyExists); a stale resourceVersion on update is retryable instead."""


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _tenant_hash(tenant: TenantRef) -> str:
    return _hash(tenant.key, 40)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def _is_ours(obj: Mapping[str, Any]) -> bool:
    return (_meta(obj).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def _is_ours_for(obj: Mapping[str, Any], tenant: TenantRef) -> bool:
    return _is_ours(obj) and (_meta(obj).get("annotations") or {}).get(TENANT_ANNOTATION) == tenant.key


def _group_of(obj: Mapping[str, Any]) -> str | None:
    name: str | None = (_meta(obj).get("annotations") or {}).get(GROUP_ANNOTATION)
    return name


def _owner_metadata(name: str, tenant: TenantRef, group: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: _tenant_hash(tenant)},
        "annotations": {TENANT_ANNOTATION: tenant.key, GROUP_ANNOTATION: group},
    }


def _role_id(binding: Mapping[str, Any]) -> str:
    ref = binding.get("roleRef") or {}
    name = str(ref.get("name", ""))
    return name if ref.get("kind") == "ClusterRole" else f"{ref.get('kind')}:{name}"


def _role_ref(role: str) -> dict[str, str]:
    kind, _, name = role.rpartition(":") if role.startswith("Role:") else ("ClusterRole", "", role)
    return {"apiGroup": RBAC, "kind": kind, "name": name}


def _user_subject(name: str) -> dict[str, str]:
    return {"kind": "User", "apiGroup": RBAC, "name": name}


def _group_subject(name: str) -> dict[str, str]:
    return {"kind": "Group", "apiGroup": RBAC, "name": name}


def _users_on(binding: Mapping[str, Any]) -> list[str]:
    return [s["name"] for s in binding.get("subjects") or [] if s.get("kind") == "User" and "name" in s]


def _names_group(binding: Mapping[str, Any], group: str) -> bool:
    return any(s.get("kind") == "Group" and s.get("name") == group for s in binding.get("subjects") or [])


def _translate(what: str, exc: Exception) -> PlatformError | None:
    """The contract error for an exception of the kubernetes client / urllib3, or None."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status == 0:  # TLS failures come back as status 0
            return PlatformConfigError(f"kubernetes {what}: {exc.reason}")
        return PermanentError(f"kubernetes {what}: HTTP {exc.status} {exc.reason}")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and isinstance(
        exc.reason, urllib3.exceptions.SSLError
    ):
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.SSLError):
        return PlatformConfigError(f"kubernetes {what}: {exc}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return RetryableError(f"kubernetes {what}: {exc}")
    return None


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


class _Base(Driver):
    """The HTTP plumbing both drivers share."""

    options_model: ClassVar[type[pydantic.BaseModel]] = KubernetesOptions
    options: KubernetesOptions
    platform_name: ClassVar[str] = "kubernetes"
    strips_foreign_bindings: ClassVar[bool] = False
    """Revoke also takes the group out of foreign bindings that grant the role (OpenShift, where
    roles granted to the Group by anyone count as the group's roles)."""

    def __init__(self, identifier: str, options: KubernetesOptions | Mapping[str, Any]) -> None:
        if not isinstance(options, KubernetesOptions):
            try:
                options = KubernetesOptions.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid {self.platform_name} block: {exc}") from exc
        super().__init__(identifier, options)
        self.api_calls: Counter[str] = Counter()
        """Requests made by this driver, by ``"<VERB> <resource>"`` (one per HTTP request)."""
        self._api: Any = None
        self._api_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._namespaces: set[str] = set()

    # --- plumbing -------------------------------------------------------------------------------

    def _client(self) -> Any:
        with self._api_lock:
            if self._api is None:
                self._api = self._make_client()
            return self._api

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
        if opts.insecure_skip_tls_verify:
            cfg.verify_ssl = False
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return client.ApiClient(cfg)

    def _request_sync(
        self, what: str, method: str, path: str, query: Sequence[tuple[str, str]], body: Any
    ) -> Any:
        with self._count_lock:
            self.api_calls[what] += 1
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
            mapped = _translate(f"{method} {path}", exc)
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
        if status == 404:
            raise _NotFoundError(text)
        if status == 409:
            if method == "POST":
                raise _ConflictError(text)
            raise RetryableError(text)  # the object changed since we read it: read again
        if status == 429 or status >= 500:
            wait = _retry_after(resp.headers)
            if wait:
                self.budget.pause(wait)
            raise RetryableError(text, retry_after=wait)
        if status == 401:
            raise PlatformConfigError(text)
        raise PermanentError(text)

    async def _request(
        self,
        what: str,
        method: str,
        path: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> Any:
        """One API request in a worker thread within the platform's budget: counted, errors mapped."""
        async with self.budget:
            return await asyncio.to_thread(self._request_sync, what, method, path, query, body)

    async def _get(self, what: str, path: str) -> Any:
        """The object, or None when it does not exist."""
        try:
            return await self._request(f"GET {what}", "GET", path)
        except _NotFoundError:
            return None

    async def _delete(self, what: str, path: str) -> None:
        try:
            await self._request(f"DELETE {what}", "DELETE", path)
        except _NotFoundError:
            return

    def _write_query(self) -> list[tuple[str, str]]:
        return [("fieldManager", FIELD_MANAGER)]

    async def _ensure_namespace(self, namespace: str) -> None:
        if not self.options.create_namespaces or namespace in self._namespaces:
            return
        if await self._get("namespaces", f"/api/v1/namespaces/{namespace}") is None:
            with contextlib.suppress(_ConflictError):
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
        return f"{_RBAC_PATH}/namespaces/{tenant.local_id}/rolebindings"

    async def _list_bindings(self, tenant: TenantRef, selector: str | None) -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        doc = await self._request("LIST rolebindings", "GET", self._bindings_path(tenant), query=query)
        items: list[dict[str, Any]] = (doc or {}).get("items") or []
        return items

    def _binding(
        self, tenant: TenantRef, name: str, group: str, role: str, subjects: list[dict[str, str]]
    ) -> dict[str, Any]:
        meta = _owner_metadata(name, tenant, group)
        meta["namespace"] = tenant.local_id
        return {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": _role_ref(role),
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
        names = [group, f"{group}-{_hash(role)}"]
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
            except _ConflictError:
                existing = await self._get("rolebindings", f"{self._bindings_path(tenant)}/{name}")
                if (
                    existing is not None
                    and _is_ours_for(existing, tenant)
                    and _group_of(existing) == group
                    and _role_id(existing) == role
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
        if _subject_keys(binding.get("subjects") or []) == _subject_keys(subjects):
            return
        body = {**binding, "subjects": subjects}
        await self._request(
            "PUT rolebindings",
            "PUT",
            f"{self._bindings_path(tenant)}/{_meta(binding)['name']}",
            body,
            self._write_query(),
        )

    async def _revoke_bindings(self, tenant: TenantRef, group: str, role: str | None) -> None:
        """Delete our bindings of ``group`` (for ``role``, or all); strip the Group subject from
        foreign bindings of ``role`` that name it (OpenShift external grants)."""
        for b in await self._list_bindings(tenant, None):
            if role is not None and _role_id(b) != role:
                continue
            name = _meta(b).get("name", "")
            if _is_ours(b) and _group_of(b) == group:
                await self._delete("rolebindings", f"{self._bindings_path(tenant)}/{name}")
            elif (
                self.strips_foreign_bindings
                and role is not None
                and not _is_ours(b)
                and _names_group(b, group)
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

    # --- the contract ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        return {euid: (PlatformUser(id=euid, name=euid),) for euid in euids}

    async def close(self) -> None:
        with self._api_lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()


def _subject_keys(subjects: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(str(s.get("kind")), str(s.get("namespace") or ""), str(s.get("name"))) for s in subjects}


class KubernetesDriver(_Base):
    """Kubernetes RBAC: per group an anchor ConfigMap plus one RoleBinding per ClusterRole."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="remove",
        lookup_attribute="User.metadata.name",
        has_groups=True,
        max_group_name_length=_MAX_NAME,
        group_name_pattern=_DNS_SUBDOMAIN,
        role_pattern=_ROLE_NAME,
        role_example="view",
    )

    def _anchors_path(self, tenant: TenantRef) -> str:
        return f"/api/v1/namespaces/{tenant.local_id}/configmaps"

    def _subjects(self, group: str, members: Sequence[str]) -> list[dict[str, str]]:
        if self.options.subjects == "group":
            return [_group_subject(group)]
        return [_user_subject(m) for m in sorted(set(members))]

    @staticmethod
    def _members(anchor: Mapping[str, Any]) -> list[str]:
        raw = (anchor.get("data") or {}).get("members") or "[]"
        try:
            members = json.loads(raw)
        except ValueError:
            return []
        return [str(m) for m in members] if isinstance(members, list) else []

    async def _anchor(self, tenant: TenantRef, name: str) -> dict[str, Any] | None:
        anchor: dict[str, Any] | None = await self._get("configmaps", f"{self._anchors_path(tenant)}/{name}")
        return anchor

    def _observe_group(
        self, anchor: Mapping[str, Any], alias: str, bindings: Sequence[Mapping[str, Any]]
    ) -> ObservedGroup:
        name = str(_meta(anchor)["name"])
        members = set(self._members(anchor))
        expected = _subject_keys(self._subjects(name, sorted(members)))
        roles: set[str] = set()
        for b in bindings:
            if _group_of(b) != name:
                continue
            members.update(_users_on(b))
            if expected <= _subject_keys(b.get("subjects") or []):
                roles.add(_role_id(b))
        return ObservedGroup(
            id=str(_meta(anchor)["uid"]),
            name=name,
            alias=alias,
            members=frozenset(PlatformUser(m, m) for m in members),
            roles=frozenset(roles),
        )

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        doc = await self._request(
            "LIST configmaps", "GET", self._anchors_path(tenant), query=[("labelSelector", selector)]
        )
        anchors = {str(_meta(a)["name"]): a for a in (doc or {}).get("items") or []}
        bindings = await self._list_bindings(tenant, selector)
        groups: list[ObservedGroup] = []
        vanished: list[str] = []
        foreign: dict[str, str] = {}
        for record in owned:
            anchor = anchors.get(record.name)
            ours = anchor is not None and (record.platform_id is not None or _is_ours_for(anchor, tenant))
            if anchor is None:
                unlabelled = await self._anchor(tenant, record.name)
                if unlabelled is None:
                    vanished.append(record.name)
                else:
                    foreign[record.name] = str(_meta(unlabelled).get("uid", ""))
            elif not ours:
                foreign[record.name] = str(_meta(anchor).get("uid", ""))
            else:
                groups.append(self._observe_group(anchor, record.alias, bindings))
        checked = {record.name for record in owned}
        for alias, name in desired_names.items():
            if name in checked:
                continue
            checked.add(name)
            anchor = anchors.get(name)
            if anchor is not None and _is_ours_for(anchor, tenant):
                groups.append(self._observe_group(anchor, alias, bindings))
                continue
            if anchor is None:
                anchor = await self._anchor(tenant, name)
            if anchor is not None:
                foreign[name] = str(_meta(anchor).get("uid", ""))
                continue
            binding = await self._get("rolebindings", f"{self._bindings_path(tenant)}/{name}")
            if binding is not None and not _is_ours_for(binding, tenant):
                foreign[name] = str(_meta(binding).get("uid", ""))
        return ObservedTenant(groups=tuple(groups), vanished=tuple(vanished), foreign=foreign)

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        await self._ensure_namespace(tenant.local_id)
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _owner_metadata(name, tenant, name),
            "data": {"members": "[]"},
        }
        try:
            created = await self._request(
                "POST configmaps", "POST", self._anchors_path(tenant), body, self._write_query()
            )
        except _ConflictError:
            existing = await self._anchor(tenant, name)
            if existing is None:
                raise RetryableError(
                    f"kubernetes: conflict creating {name!r}, but it does not exist"
                ) from None
            if not _is_ours_for(existing, tenant):
                raise ForeignObjectError(
                    f"kubernetes: a ConfigMap {name!r} already exists in {tenant.local_id} and is not ours"
                ) from None
            created = existing
        return str(_meta(created)["uid"])

    async def _owned_anchor(self, tenant: TenantRef, name: str) -> dict[str, Any]:
        anchor = await self._anchor(tenant, name)
        if anchor is None:
            raise RetryableError(
                f"kubernetes: the anchor ConfigMap of {name!r} is gone (the next run recreates it)"
            )
        if not _is_ours(anchor):
            raise ForeignObjectError(f"kubernetes: ConfigMap {name!r} in {tenant.local_id} is not ours")
        return anchor

    async def _change_member(self, tenant: TenantRef, name: str, user: str, add: bool) -> None:
        anchor = await self._owned_anchor(tenant, name)
        members = self._members(anchor)
        wanted = sorted({*members, user}) if add else sorted(m for m in members if m != user)
        if wanted != sorted(members):
            anchor = {**anchor, "data": {**(anchor.get("data") or {}), "members": json.dumps(wanted)}}
            await self._request(
                "PUT configmaps",
                "PUT",
                f"{self._anchors_path(tenant)}/{name}",
                anchor,
                self._write_query(),
            )
        for b in await self._list_bindings(tenant, f"{MANAGED_BY_LABEL}={MANAGED_BY}"):
            if _group_of(b) != name:
                continue
            subjects = [dict(s) for s in b.get("subjects") or []]
            if add:
                for s in self._subjects(name, [user]):
                    if _subject_keys([s]) - _subject_keys(subjects):
                        subjects.append(s)
            else:
                subjects = [s for s in subjects if not (s.get("kind") == "User" and s.get("name") == user)]
            await self._put_subjects(tenant, b, subjects)

    async def _grant(self, tenant: TenantRef, name: str, role: str) -> None:
        anchor = await self._owned_anchor(tenant, name)
        subjects = self._subjects(name, self._members(anchor))
        bindings = await self._list_bindings(tenant, None)
        for b in bindings:
            if _is_ours(b) and _group_of(b) == name and _role_id(b) == role:
                # Repair: add what is missing, keep extra users (removing them is remove_member's job,
                # which the deletion guard counts).
                current = [dict(s) for s in b.get("subjects") or []]
                missing = [s for s in subjects if _subject_keys([s]) - _subject_keys(current)]
                await self._put_subjects(tenant, b, current + missing)
                return
        taken = {str(_meta(b).get("name")) for b in bindings}
        await self._create_binding(tenant, name, role, subjects, taken)

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        anchor = await self._anchor(tenant, name)
        if anchor is not None and not (_is_ours(anchor) if group_id else _is_ours_for(anchor, tenant)):
            raise ForeignObjectError(f"kubernetes: ConfigMap {name!r} in {tenant.local_id} is not ours")
        await self._revoke_bindings(tenant, name, None)
        if anchor is not None:
            await self._delete("configmaps", f"{self._anchors_path(tenant)}/{name}")

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
        elif action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"kubernetes {action}: change for {change.group!r} names no user")
            await self._change_member(tenant, change.group, change.user.name, action is Action.ADD_MEMBER)
        elif action is Action.GRANT:
            if not change.role:
                raise PermanentError(f"kubernetes grant: change for {change.group!r} names no ClusterRole")
            await self._grant(tenant, change.group, change.role)
        elif action is Action.REVOKE:
            if not change.role:
                raise PermanentError(f"kubernetes revoke: change for {change.group!r} names no ClusterRole")
            await self._revoke_bindings(tenant, change.group, change.role)
        else:
            raise PermanentError(f"kubernetes {action}: not supported (Kubernetes has no user objects)")
        return None


class OpenShiftDriver(_Base):
    """OpenShift: ``user.openshift.io/v1`` Groups plus RoleBindings of the Group in the project."""

    platform_name: ClassVar[str] = "openshift"
    capabilities: ClassVar[Capabilities] = dataclasses.replace(
        KubernetesDriver.capabilities, external_grants_default="keep"
    )
    strips_foreign_bindings: ClassVar[bool] = True

    async def _group(self, name: str) -> dict[str, Any] | None:
        group: dict[str, Any] | None = await self._get("groups", f"{_GROUPS_PATH}/{name}")
        return group

    @staticmethod
    def _observe_group(
        group: Mapping[str, Any], alias: str, bindings: Sequence[Mapping[str, Any]]
    ) -> ObservedGroup:
        name = str(_meta(group)["name"])
        users = [str(u) for u in group.get("users") or []]
        roles = {_role_id(b) for b in bindings if _names_group(b, name)}
        return ObservedGroup(
            id=str(_meta(group)["uid"]),
            name=name,
            alias=alias,
            members=frozenset(PlatformUser(u, u) for u in users),
            roles=frozenset(roles),
        )

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={_tenant_hash(tenant)}"
        doc = await self._request("LIST groups", "GET", _GROUPS_PATH, query=[("labelSelector", selector)])
        mine = {str(_meta(g)["name"]): g for g in (doc or {}).get("items") or []}
        bindings = await self._list_bindings(tenant, None)
        groups: list[ObservedGroup] = []
        vanished: list[str] = []
        foreign: dict[str, str] = {}
        names = [(r.name, r.alias, r.platform_id is not None) for r in owned]
        checked = {r.name for r in owned}
        for alias, name in desired_names.items():
            if name not in checked:
                checked.add(name)
                names.append((name, alias, False))
        for name, alias, confirmed in names:
            group = mine.get(name)
            if group is None:
                group = await self._group(name)
                if group is None:
                    if confirmed or any(r.name == name for r in owned):
                        vanished.append(name)
                    continue
            if (confirmed and _is_ours(group)) or _is_ours_for(group, tenant):
                groups.append(self._observe_group(group, alias, bindings))
            else:
                foreign[name] = str(_meta(group).get("uid", ""))
        return ObservedTenant(groups=tuple(groups), vanished=tuple(vanished), foreign=foreign)

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        await self._ensure_namespace(tenant.local_id)
        body = {
            "apiVersion": "user.openshift.io/v1",
            "kind": "Group",
            "metadata": _owner_metadata(name, tenant, name),
            "users": [],
        }
        try:
            created = await self._request("POST groups", "POST", _GROUPS_PATH, body, self._write_query())
        except _ConflictError:
            existing = await self._group(name)
            if existing is None:
                raise RetryableError(
                    f"openshift: conflict creating group {name!r}, but it does not exist"
                ) from None
            if not _is_ours_for(existing, tenant):
                raise ForeignObjectError(
                    f"openshift: a group {name!r} already exists and is not ours"
                ) from None
            created = existing
        return str(_meta(created)["uid"])

    async def _owned_group(self, name: str) -> dict[str, Any]:
        group = await self._group(name)
        if group is None:
            raise RetryableError(f"openshift: group {name!r} is gone (the next run recreates it)")
        if not _is_ours(group):
            raise ForeignObjectError(f"openshift: group {name!r} is not ours")
        return group

    async def _change_member(self, name: str, user: str, add: bool) -> None:
        group = await self._owned_group(name)
        users = [str(u) for u in group.get("users") or []]
        if (user in users) == add:
            return
        wanted = [*users, user] if add else [u for u in users if u != user]
        await self._request(
            "PUT groups", "PUT", f"{_GROUPS_PATH}/{name}", {**group, "users": wanted}, self._write_query()
        )

    async def _grant(self, tenant: TenantRef, name: str, role: str) -> None:
        await self._owned_group(name)
        bindings = await self._list_bindings(tenant, None)
        if any(_role_id(b) == role and _names_group(b, name) for b in bindings):
            return
        for b in bindings:
            if _is_ours(b) and _group_of(b) == name and _role_id(b) == role:
                await self._put_subjects(tenant, b, [_group_subject(name)])
                return
        taken = {str(_meta(b).get("name")) for b in bindings}
        await self._create_binding(tenant, name, role, [_group_subject(name)], taken)

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        group = await self._group(name)
        if group is not None and not (_is_ours(group) if group_id else _is_ours_for(group, tenant)):
            raise ForeignObjectError(f"openshift: group {name!r} is not ours")
        await self._revoke_bindings(tenant, name, None)
        if group is not None:
            await self._delete("groups", f"{_GROUPS_PATH}/{name}")

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
        elif action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"openshift {action}: change for {change.group!r} names no user")
            await self._change_member(change.group, change.user.name, action is Action.ADD_MEMBER)
        elif action is Action.GRANT:
            if not change.role:
                raise PermanentError(f"openshift grant: change for {change.group!r} names no ClusterRole")
            await self._grant(tenant, change.group, change.role)
        elif action is Action.REVOKE:
            if not change.role:
                raise PermanentError(f"openshift revoke: change for {change.group!r} names no ClusterRole")
            await self._revoke_bindings(tenant, change.group, change.role)
        else:
            raise PermanentError(f"openshift {action}: not supported")
        return None
