"""One adapter per platform for the driver conformance suite (``test_driver_contract.py``).

An adapter (:class:`Backend`) knows how to reach one platform's test backend (the same servers and
fixtures the driver's integration tests use), how to build a driver pointed at it, and how to read
and arrange the backend directly, never through the driver: a tenant that exists there, two users,
a role, a foreign group with our name, a read that fails in the middle of an observation, a write
answered with 429 and ``Retry-After``. A new driver joins the suite with one adapter class, added
to ``ADAPTERS``.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import pytest

from platforms.aws import AwsDriver
from platforms.azure import AzureDriver
from platforms.cloudfoundry import CloudFoundryDriver
from platforms.contract import Driver, TenantRef
from platforms.gcp import GcpDriver
from platforms.kubernetes import KubernetesDriver, OpenShiftDriver
from platforms.openstack import OpenstackDriver
from tests.integration.test_kubernetes_driver import options as kube_options
from tests.support.cf_server import CLIENT_SECRET as CF_SECRET
from tests.support.cf_server import SECRET_ENV as CF_SECRET_ENV
from tests.support.cf_server import CfServer
from tests.support.faults import FaultProxy, Request
from tests.support.gcp_server import DOMAIN as GCP_DOMAIN
from tests.support.gcp_server import GcpServer
from tests.support.keystone import ADMIN_PASSWORD, PASSWORD_ENV, World, shared
from tests.support.kube import KubeCluster, shared_cluster, unique
from tests.support.moto_aws import MotoAws

T = TypeVar("T")
RETRY_AFTER = 1
"""Seconds every adapter's throttled answer asks the driver to wait (``Retry-After: 1``)."""


class Backend(Protocol):
    """What the conformance tests need of one platform's backend."""

    name: str
    """The adapter's id in test ids (``aws``, ``azure``, ...)."""
    platform_type: str
    """The platform type a config names (``platforms.contract.PLATFORM_TYPES``)."""
    tenant: TenantRef
    """A tenant that exists on the backend (a fresh one per test where the backend allows)."""
    euids: tuple[str, str]
    """Two users that exist on the backend, as the driver looks them up (transformed euids)."""
    role: str
    """A role id the platform accepts for a grant on ``tenant``."""
    foreign_unsupported: str | None
    """Why no object can carry one of our group names on this platform (None: it can)."""
    known_defects: dict[str, str]
    """Test function name -> the driver's defect that makes it fail (marked ``xfail(strict=True)``)."""

    def driver(self) -> Driver:
        """A new driver pointed at the backend (through the fault proxy where there is one)."""

    def group_name(self, alias: str) -> str:
        """A group name valid on the platform, unique to this test (the prefix included)."""

    def members(self, name: str, group_id: str) -> set[str]:
        """Platform user ids that are members of our group, read from the backend directly."""

    def roles(self, name: str, group_id: str) -> set[str]:
        """Roles bound to our group on the tenant, read from the backend directly."""

    def group_exists(self, name: str, group_id: str) -> bool:
        """Whether our group object (or the platform's stand-in for it) exists on the backend."""

    def create_foreign(self, name: str) -> None:
        """Create, directly on the backend, an object named ``name`` that is not ours."""

    def foreign_state(self, name: str) -> Any:
        """Everything about the foreign object ``name`` that must stay untouched (comparable)."""

    def fail_observation(self) -> None:
        """Make one read of the next observation fail (5xx), after an earlier read succeeded where
        the observation makes several."""

    def throttle_member_write(self) -> None:
        """Answer the next write that adds a member with 429 and ``Retry-After: RETRY_AFTER``."""

    def fault_fired(self) -> bool:
        """Whether the fault armed last was injected (a test that armed one asserts it was)."""

    def clear_faults(self) -> None:
        """Forget any armed fault that did not fire."""


class Defaults:
    """What a backend has unless it says otherwise: no known defect, foreign objects possible."""

    known_defects: dict[str, str] = {}
    foreign_unsupported: str | None = None


class OneShot:
    """A FaultProxy ``match`` that accepts the first request ``predicate`` accepts, and no other."""

    def __init__(self, predicate: Callable[[Request], bool]) -> None:
        self.predicate = predicate
        self.fired = False
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> bool:
        with self._lock:
            if self.fired or not self.predicate(request):
                return False
            self.fired = True
            return True


class ProxiedBackend(Defaults):
    """An adapter whose driver talks to the backend through a :class:`FaultProxy` (no faults
    until one is armed)."""

    proxy: FaultProxy
    _shot: OneShot | None = None
    _armed_at = 0
    _needs_read_before = False

    def _arm(self, fault: str, predicate: Callable[[Request], bool], *, mid_read: bool = False) -> None:
        self._shot = OneShot(predicate)
        self._armed_at = len(self.proxy.log)
        self._needs_read_before = mid_read
        self.proxy.set_faults({fault: 1.0})
        self.proxy.match = self._shot
        self.proxy.rate = 1.0

    def fault_fired(self) -> bool:
        """Injected; for an observation's fault also: a read of the same run succeeded before it
        (the failure came in the middle, not at the start)."""
        if self._shot is None or not self._shot.fired:
            return False
        if not self._needs_read_before:
            return True
        outcomes = [outcome for _, outcome in self.proxy.log[self._armed_at :]]
        return "ok" in outcomes[: outcomes.index(next(o for o in outcomes if o != "ok"))]

    def clear_faults(self) -> None:
        self.proxy.rate = 0.0
        self.proxy.match = None


def distinct(items: Iterable[T], what: str) -> set[T]:
    """``items`` as a set, failing the test when one is there twice (a duplicate the backend kept)."""
    listed = list(items)
    assert len(listed) == len(set(listed)), f"a {what} is there twice: {sorted(map(str, listed))}"
    return set(listed)


def _tag() -> str:
    return "p" + secrets.token_hex(3)


# --- AWS IAM Identity Center (moto) -------------------------------------------------------------


class AwsBackend(ProxiedBackend):
    name = "aws"
    platform_type = "aws"
    ACCOUNT = "111111111111"

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.moto: MotoAws = request.getfixturevalue("moto")  # reset, dummy credentials
        self.proxy = FaultProxy(self.moto.url, retry_after=(RETRY_AFTER,)).start()
        request.addfinalizer(self.proxy.stop)
        self.project = _tag()
        self.tenant = TenantRef(f"conf/{self.project}/aws.test", "aws.test", self.ACCOUNT)
        self.euids = ("alice", "bob")
        for euid in self.euids:
            self.moto.create_user(euid)
        self.role = self.moto.create_permission_set("conformance")

    def driver(self) -> Driver:
        return AwsDriver(
            self.tenant.platform,
            self.moto.driver_options(
                endpointUrl=self.proxy.url, maxAttempts=1, pollInterval=0.01, pollTimeout=5.0
            ),
        )

    def group_name(self, alias: str) -> str:
        return f"mst-conf.{self.project}-{alias}"

    def members(self, name: str, group_id: str) -> set[str]:
        return distinct(self.moto.members(group_id), "membership")

    def roles(self, name: str, group_id: str) -> set[str]:
        rows = [p for p in self.moto.assignments(self.ACCOUNT, self.role) if p == ("GROUP", group_id)]
        return {self.role for _ in distinct(rows, "account assignment")}

    def group_exists(self, name: str, group_id: str) -> bool:
        return self.moto.groups().get(name) == group_id

    def create_foreign(self, name: str) -> None:
        gid = self.moto.create_group(name, "made by hand")
        self.moto.add_member(gid, self.moto.create_user(f"hand-{name}"))

    def foreign_state(self, name: str) -> Any:
        gid = self.moto.groups()[name]
        return (gid, self.moto.group_descriptions()[name], sorted(self.moto.members(gid)))

    def fail_observation(self) -> None:
        # an observation reads the group, its memberships, then the account assignments
        self._arm("500", lambda r: "ListAccountAssignments" in r.operation, mid_read=True)

    def throttle_member_write(self) -> None:
        self._arm("429", lambda r: r.operation == "AWSIdentityStore.CreateGroupMembership")


# --- OpenStack Keystone ---------------------------------------------------------------------------


class OpenstackBackend(ProxiedBackend):
    name = "openstack"
    platform_type = "openstack"

    def __init__(self, request: pytest.FixtureRequest) -> None:
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv(PASSWORD_ENV, ADMIN_PASSWORD)
        self.world = World(shared(), uuid.uuid4().hex[:10])
        request.addfinalizer(self.world.cleanup)
        base, _, self.path = self.world.ks.url.partition("/v3")
        self.proxy = FaultProxy(base, retry_after=(RETRY_AFTER,)).start()
        request.addfinalizer(self.proxy.stop)
        self.project = _tag()
        self.tenant = TenantRef(
            f"conf/{self.project}/openstack.test", "openstack.test", self.world.project("web")
        )
        self.euids = ("alice", "bob")
        self.user_ids = {euid: self.world.user(euid) for euid in self.euids}
        self.role = "member"

    def driver(self) -> Driver:
        url = f"{self.proxy.url}/v3{self.path}"
        return OpenstackDriver(
            self.tenant.platform, self.world.driver_options(authUrl=url, endpointOverride=url)
        )

    def group_name(self, alias: str) -> str:
        return f"conf.{self.project}-{alias}"

    def members(self, name: str, group_id: str) -> set[str]:
        return distinct([str(u.id) for u in self.world.conn.identity.group_users(group_id)], "membership")

    def roles(self, name: str, group_id: str) -> set[str]:
        return distinct(self.world.assignments(self.tenant.local_id, group_id), "role assignment")

    def group_exists(self, name: str, group_id: str) -> bool:
        group = self.world.groups().get(name)
        return group is not None and group.id == group_id

    def create_foreign(self, name: str) -> None:
        identity = self.world.conn.identity
        group = identity.create_group(name=name, domain_id=self.world.domain.id, description="made by hand")
        identity.add_user_to_group(self.world.user(f"hand-{name}"), group)

    def foreign_state(self, name: str) -> Any:
        group = self.world.groups()[name]
        return (group.id, group.description, self.world.members(group.id))

    def fail_observation(self) -> None:
        # an observation reads the group's members, then the project's role assignments
        self._arm("500", lambda r: r.method == "GET" and "role_assignments" in r.path, mid_read=True)

    def throttle_member_write(self) -> None:
        self._arm("429", lambda r: r.method == "PUT" and "/users/" in r.path)


# --- Kubernetes and OpenShift (kube-apiserver) ---------------------------------------------------


class KubernetesBackend(ProxiedBackend):
    name = "kubernetes"
    platform_type = "kubernetes"
    driver_class: ClassVar[type[KubernetesDriver] | type[OpenShiftDriver]] = KubernetesDriver
    role = "view"

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.kube: KubeCluster = shared_cluster()
        self.tmp: Path = request.getfixturevalue("tmp_path")
        self.proxy = FaultProxy(self.kube.server, retry_after=(RETRY_AFTER,)).start()
        request.addfinalizer(self.proxy.stop)
        self.project = unique("p")
        namespace = unique("conf")
        self.kube.admin.create_namespace(namespace)
        self.tenant = TenantRef(
            f"conf/{self.project}/{self.platform_type}.test", f"{self.platform_type}.test", namespace
        )
        self.euids = ("alice@example.com", "bob@example.com")  # users are names, not objects

    def driver(self) -> Driver:
        return self.driver_class(
            self.tenant.platform, kube_options(self.kube, self.tmp, server=self.proxy.url)
        )

    def group_name(self, alias: str) -> str:
        return f"conf.{self.project}-{alias}"

    def _bindings(self, name: str) -> list[dict[str, Any]]:
        return [
            b
            for b in self.kube.admin.bindings(self.tenant.local_id).values()
            if (b["metadata"].get("annotations") or {}).get("replicator.meshcloud.io/group") == name
        ]

    def _anchor(self, name: str) -> dict[str, Any] | None:
        anchor: dict[str, Any] | None = self.kube.admin.configmaps(self.tenant.local_id).get(name)
        return anchor

    def members(self, name: str, group_id: str) -> set[str]:
        anchor = self._anchor(name)
        listed = distinct(json.loads((anchor or {}).get("data", {}).get("members") or "[]"), "member")
        for b in self._bindings(name):  # every binding of the group names exactly the members
            assert {s["name"] for s in b.get("subjects") or []} == listed, b
        return listed

    def roles(self, name: str, group_id: str) -> set[str]:
        return distinct([b["roleRef"]["name"] for b in self._bindings(name)], "RoleBinding")

    def group_exists(self, name: str, group_id: str) -> bool:
        anchor = self._anchor(name)
        return anchor is not None and anchor["metadata"]["uid"] == group_id

    def create_foreign(self, name: str) -> None:
        self.kube.admin.request(
            "POST",
            f"/api/v1/namespaces/{self.tenant.local_id}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"by": "hand"}},
        )

    def foreign_state(self, name: str) -> Any:
        cm = self._anchor(name)
        assert cm is not None
        return (
            cm["metadata"]["uid"],
            cm["metadata"].get("labels"),
            cm["metadata"].get("annotations"),
            cm["data"],
        )

    def fail_observation(self) -> None:
        # an observation lists the anchors (or groups), then the namespace's RoleBindings
        self._arm("500", lambda r: r.method == "GET" and "/rolebindings" in r.path, mid_read=True)

    def throttle_member_write(self) -> None:
        self._arm("429", lambda r: r.method in ("PUT", "PATCH") and "/configmaps/" in r.path)


class OpenShiftBackend(KubernetesBackend):
    name = "openshift"
    platform_type = "openshift"
    driver_class = OpenShiftDriver

    def _group(self, name: str) -> dict[str, Any] | None:
        group: dict[str, Any] | None = self.kube.admin.get(f"/apis/user.openshift.io/v1/groups/{name}")
        return group

    def _bindings(self, name: str) -> list[dict[str, Any]]:
        return [
            b
            for b in self.kube.admin.bindings(self.tenant.local_id).values()
            if any(s.get("kind") == "Group" and s.get("name") == name for s in b.get("subjects") or [])
        ]

    def members(self, name: str, group_id: str) -> set[str]:
        return distinct((self._group(name) or {}).get("users") or [], "group user")

    def group_exists(self, name: str, group_id: str) -> bool:
        group = self._group(name)
        return group is not None and group["metadata"]["uid"] == group_id

    def create_foreign(self, name: str) -> None:
        body = {
            "apiVersion": "user.openshift.io/v1",
            "kind": "Group",
            "metadata": {"name": name},
            "users": ["erin"],
        }
        self.kube.admin.request("POST", "/apis/user.openshift.io/v1/groups", body)

    def foreign_state(self, name: str) -> Any:
        group = self._group(name)
        assert group is not None
        meta = group["metadata"]
        return (meta["uid"], meta.get("labels"), meta.get("annotations"), group.get("users"))

    def throttle_member_write(self) -> None:
        self._arm("429", lambda r: r.method in ("PUT", "PATCH") and "/user.openshift.io/" in r.path)


# --- Azure (Entra ID + ARM, local server) ---------------------------------------------------------


class AzureBackend(Defaults):
    name = "azure"
    platform_type = "azure"
    SUBSCRIPTION = "0b1f6d2c-3a4e-4c5d-8e9f-1a2b3c4d5e6f"
    role = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # Reader

    def __init__(self, request: pytest.FixtureRequest) -> None:
        from tests.support.azure_server import AzureServer

        self.azure: AzureServer = request.getfixturevalue("azure")  # reset, secret in the env
        self.project = _tag()
        self.tenant = TenantRef(f"conf/{self.project}/azure.test", "azure.test", self.SUBSCRIPTION)
        self.euids = ("alice@example.com", "bob@example.com")  # looked up by mail (the default)
        for euid in self.euids:
            self.azure.add_user(euid)
        self.scope = f"/subscriptions/{self.SUBSCRIPTION}"

    def driver(self) -> Driver:
        return AzureDriver(self.tenant.platform, self.azure.driver_options())

    def group_name(self, alias: str) -> str:
        return f"conf.{self.project}-{alias}"

    def members(self, name: str, group_id: str) -> set[str]:
        return distinct(self.azure.members(group_id), "member")

    def roles(self, name: str, group_id: str) -> set[str]:
        return distinct(self.azure.roles(group_id, self.scope), "role assignment")

    def group_exists(self, name: str, group_id: str) -> bool:
        return group_id in self.azure.groups().get(name, [])

    def create_foreign(self, name: str) -> None:
        gid = self.azure.add_group(name, "made by hand")
        self.azure.add_member(gid, self.azure.add_user(f"hand-{self.project}@example.com"))

    def foreign_state(self, name: str) -> Any:
        gid = self.azure.group_id(name)
        return (self.azure.group(gid), self.azure.members(gid), self.azure.assignments(gid))

    def fail_observation(self) -> None:
        # an observation reads the group's members (Graph), then the scope's assignments (ARM);
        # the driver repeats a failed call a few times itself, so every attempt fails
        self.azure.throttle("GET", r"/roleAssignments", count=20, status=500, retry_after=None)
        self._armed = (self.azure.faults[-1], 20)

    def throttle_member_write(self) -> None:
        self.azure.throttle("POST", r"/members/\$ref$", retry_after=str(RETRY_AFTER))
        self._armed = (self.azure.faults[-1], 1)

    def fault_fired(self) -> bool:
        fault, count = self._armed
        return fault.count < count

    def clear_faults(self) -> None:
        with self.azure._lock:
            self.azure.faults.clear()


# --- Google Cloud (local Cloud Identity / Admin SDK / Resource Manager) ---------------------------


class GcpBackend(Defaults):
    name = "gcp"
    platform_type = "gcp"
    role = "roles/viewer"

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.gcp: GcpServer = request.getfixturevalue("gcp_session")
        self.gcp.reset()
        self.project = _tag()
        self.gcp.add_project(f"conf-{self.project}")
        self.tenant = TenantRef(f"conf/{self.project}/gcp.test", "gcp.test", f"conf-{self.project}")
        self.euids = (f"alice@{GCP_DOMAIN}", f"bob@{GCP_DOMAIN}")  # looked up by email (the default)
        self.user_ids = {euid: self.gcp.add_user(euid) for euid in self.euids}

    def driver(self) -> Driver:
        return GcpDriver(self.tenant.platform, self.gcp.driver_options())

    def group_name(self, alias: str) -> str:
        return f"conf.{self.project}-{alias}"

    def email(self, name: str) -> str:
        return f"{name}@{GCP_DOMAIN}"

    def members(self, name: str, group_id: str) -> set[str]:
        return distinct(self.gcp.members(self.email(name)), "membership")  # user ids are the emails

    def roles(self, name: str, group_id: str) -> set[str]:
        return distinct(self.gcp.roles_of(self.tenant.local_id, f"group:{self.email(name)}"), "binding")

    def group_exists(self, name: str, group_id: str) -> bool:
        group = self.gcp.groups().get(self.email(name))
        return group is not None and group_id in (group["name"], group["name"].rsplit("/", 1)[-1])

    def create_foreign(self, name: str) -> None:
        self.gcp.add_user(f"hand@{GCP_DOMAIN}")
        self.gcp.add_group(self.email(name), "made by hand", members=(f"hand@{GCP_DOMAIN}",))

    def foreign_state(self, name: str) -> Any:
        return (self.gcp.groups()[self.email(name)], self.gcp.members(self.email(name)))

    def fail_observation(self) -> None:
        # an observation reads the group's memberships, then the project's IAM policy
        self.gcp.fail_next(r":getIamPolicy", 500, "INTERNAL")

    def throttle_member_write(self) -> None:
        self.gcp.fail_next(r"/memberships$", 429, "RESOURCE_EXHAUSTED", retry_after=str(RETRY_AFTER))

    def fault_fired(self) -> bool:
        return not self.gcp.world.faults

    def clear_faults(self) -> None:
        with self.gcp.world.lock:
            self.gcp.world.faults.clear()


# --- Cloud Foundry (local CF v3 / UAA server) -------------------------------------------------------


class CloudFoundryBackend(Defaults):
    name = "cloudfoundry"
    platform_type = "cloudfoundry"
    foreign_unsupported: str | None = (
        "Cloud Foundry has no group objects: a group is virtual (its members' space roles), so no "
        "object can carry one of our group names"
    )
    role = "space_developer"

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.cf: CfServer = request.getfixturevalue("cf_server")
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv(CF_SECRET_ENV, CF_SECRET)
        self.cf.reset()
        self.project = _tag()
        org = self.cf.add_org("conf")
        space = self.cf.add_space(org, self.project)
        self.tenant = TenantRef(f"conf/{self.project}/cf.test", "cf.test", space)
        self.euids = ("alice", "bob")
        self.user_ids = {euid: self.cf.add_user(euid) for euid in self.euids}

    def driver(self) -> Driver:
        return CloudFoundryDriver(self.tenant.platform, self.cf.driver_options())

    def group_name(self, alias: str) -> str:
        return f"conf.{self.project}-{alias}"

    def _roles(self) -> set[tuple[str, str]]:
        return distinct(self.cf.space_roles(self.tenant.local_id), "space role")

    def members(self, name: str, group_id: str) -> set[str]:
        return {self.user_ids[user] for user, _ in self._roles() if user in self.user_ids}

    def roles(self, name: str, group_id: str) -> set[str]:
        return {role for _, role in self._roles()}

    def group_exists(self, name: str, group_id: str) -> bool:
        return True  # a virtual group exists as long as we say so

    def create_foreign(self, name: str) -> None:
        raise NotImplementedError(self.foreign_unsupported)

    def foreign_state(self, name: str) -> Any:
        raise NotImplementedError(self.foreign_unsupported)

    def fail_observation(self) -> None:
        # an observation is one list of the space's roles (paged): it fails as a whole
        self.cf.fail_next("GET", r"/v3/roles", 500)

    def throttle_member_write(self) -> None:
        self.cf.fail_next("POST", r"/v3/roles", 429, retry_after=str(RETRY_AFTER))

    def fault_fired(self) -> bool:
        return not self.cf.world.faults

    def clear_faults(self) -> None:
        with self.cf.world.lock:
            self.cf.world.faults.clear()


ADAPTERS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "aws": AwsBackend,
    "azure": AzureBackend,
    "gcp": GcpBackend,
    "openstack": OpenstackBackend,
    "kubernetes": KubernetesBackend,
    "openshift": OpenShiftBackend,
    "cloudfoundry": CloudFoundryBackend,
}


@contextmanager
def backend_for(name: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The adapter ``name`` set up for one test (its finalizers run after the test)."""
    backend = ADAPTERS[name](request)
    try:
        yield backend
    finally:
        backend.clear_faults()
