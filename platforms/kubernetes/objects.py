"""The objects both drivers write and read: our labels and annotations, RoleBinding parts."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from platforms.contract import TenantRef

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "replicator"
TENANT_LABEL = "replicator.meshcloud.io/tenant-hash"
TENANT_ANNOTATION = "replicator.meshcloud.io/tenant"
GROUP_ANNOTATION = "replicator.meshcloud.io/group"
FIELD_MANAGER = "replicator"
RBAC = "rbac.authorization.k8s.io"
RBAC_PATH = "/apis/rbac.authorization.k8s.io/v1"
GROUPS_PATH = "/apis/user.openshift.io/v1/groups"
USERS_PATH = "/apis/user.openshift.io/v1/users"


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def tenant_hash(tenant: TenantRef) -> str:
    return short_hash(tenant.key, 40)


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def is_ours(obj: Mapping[str, Any]) -> bool:
    return (meta(obj).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


def is_ours_for(obj: Mapping[str, Any], tenant: TenantRef) -> bool:
    return is_ours(obj) and (meta(obj).get("annotations") or {}).get(TENANT_ANNOTATION) == tenant.key


def is_ours_as(obj: Mapping[str, Any], tenant: TenantRef, recorded: bool) -> bool:
    """Ours by the label when the state store recorded the group, else (found only by name) only
    with the annotation naming this tenant."""
    return is_ours(obj) if recorded else is_ours_for(obj, tenant)


def binds(binding: Mapping[str, Any], group: str, role: str) -> bool:
    """``binding`` is our binding of ``role`` for ``group``."""
    return is_ours(binding) and group_of(binding) == group and role_id(binding) == role


def group_of(obj: Mapping[str, Any]) -> str | None:
    name: str | None = (meta(obj).get("annotations") or {}).get(GROUP_ANNOTATION)
    return name


def owner_metadata(name: str, tenant: TenantRef, group: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: tenant_hash(tenant)},
        "annotations": {TENANT_ANNOTATION: tenant.key, GROUP_ANNOTATION: group},
    }


def role_id(binding: Mapping[str, Any]) -> str:
    ref = binding.get("roleRef") or {}
    name = str(ref.get("name", ""))
    return name if ref.get("kind") == "ClusterRole" else f"{ref.get('kind')}:{name}"


def role_ref(role: str) -> dict[str, str]:
    kind, _, name = role.rpartition(":") if role.startswith("Role:") else ("ClusterRole", "", role)
    return {"apiGroup": RBAC, "kind": kind, "name": name}


def user_subject(name: str) -> dict[str, str]:
    return {"kind": "User", "apiGroup": RBAC, "name": name}


def group_subject(name: str) -> dict[str, str]:
    return {"kind": "Group", "apiGroup": RBAC, "name": name}


def users_on(binding: Mapping[str, Any]) -> list[str]:
    return [s["name"] for s in binding.get("subjects") or [] if s.get("kind") == "User" and "name" in s]


def names_group(binding: Mapping[str, Any], group: str) -> bool:
    return any(s.get("kind") == "Group" and s.get("name") == group for s in binding.get("subjects") or [])


def subject_keys(subjects: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(str(s.get("kind")), str(s.get("namespace") or ""), str(s.get("name"))) for s in subjects}
