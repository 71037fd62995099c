"""The Kubernetes and OpenShift drivers against a real kube-apiserver over HTTPS. Every assertion about
the cluster reads it with the plain ``kubernetes`` client (tests/support/kube.py), not the driver."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from platforms.contract import (
    Action,
    Change,
    ForeignObjectError,
    OwnedGroup,
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    TenantRef,
)
from platforms.kubernetes import (
    MANAGED_BY_LABEL,
    TENANT_ANNOTATION,
    KubernetesDriver,
    KubernetesOptions,
    OpenShiftDriver,
)
from platforms.registry import driver_class
from tests.integration.conftest import ROOT, assert_import_loads_no_sdk
from tests.support.kube import KubeCluster, shared_cluster, unique

pytestmark = pytest.mark.integration

RB = "/apis/rbac.authorization.k8s.io/v1/namespaces"


@pytest.fixture
def kube() -> KubeCluster:
    return shared_cluster()


def options(kube: KubeCluster, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    token = tmp_path / "token"
    token.write_text(kube.token + "\n")
    return {
        "server": kube.server,
        "token": {"file": str(token)},
        "caFile": str(kube.ca_file),
        "createNamespaces": True,
        **extra,
    }


def tenant_in(namespace: str, project: str = "ledger") -> TenantRef:
    return TenantRef(f"ws/{project}/kubernetes.test", "kubernetes.test", namespace)


def alice() -> PlatformUser:
    return PlatformUser("alice@example.com", "alice@example.com")


async def build(drv: Any, tenant: TenantRef, name: str, role: str, *members: PlatformUser) -> str:
    gid = await drv.apply(tenant, Change(Action.CREATE_GROUP, name, "reader"), None)
    assert gid
    for m in members:
        await drv.apply(tenant, Change(Action.ADD_MEMBER, name, "reader", user=m, euid=m.name), gid)
    await drv.apply(tenant, Change(Action.GRANT, name, "reader", role=role), gid)
    return str(gid)


def test_module_imports_without_the_sdk() -> None:
    assert_import_loads_no_sdk("platforms.kubernetes, platforms.registry", "kubernetes", ("kubernetes",))
    assert driver_class("kubernetes") is KubernetesDriver
    assert driver_class("openshift") is OpenShiftDriver


def test_options_model() -> None:
    with pytest.raises(ValueError, match="token needs server"):
        KubernetesOptions.model_validate({"token": {"env": "T"}})
    with pytest.raises(ValueError, match="exactly one"):
        KubernetesOptions.model_validate({"server": "https://x", "token": {"env": "T", "file": "f"}})
    with pytest.raises(ValueError, match="extra"):
        KubernetesOptions.model_validate({"kubeConfig": "x"})
    opts = KubernetesOptions.model_validate({"kubeconfig": "k", "context": "c", "subjects": "group"})
    assert opts.subjects == "group"
    assert not opts.create_namespaces
    with pytest.raises(PlatformConfigError):
        KubernetesDriver("kubernetes.test", {"subjects": "nobody"})


def test_capabilities_say_which_names_kubernetes_refuses() -> None:
    caps = KubernetesDriver.capabilities
    assert caps.check_group_name("ws.ledger-admin") is None
    assert caps.check_group_name("WS.ledger-admin") is not None
    assert caps.check_group_name("ws_ledger") is not None
    assert caps.check_group_name("-ws") is not None
    assert caps.check_group_name("a" * 245) is not None
    assert caps.external_grants_default == "remove"
    assert OpenShiftDriver.capabilities.external_grants_default == "keep"
    assert caps.check_role("view") is None
    assert caps.check_role("a/b") is not None


async def test_lookup_makes_no_call(kube: KubeCluster, tmp_path: Path) -> None:
    drv = KubernetesDriver("kubernetes.test", options(kube, tmp_path))
    found = await drv.lookup_users(["alice@example.com", "Bob"])
    assert found == {
        "alice@example.com": (alice(),),
        "Bob": (PlatformUser("Bob", "Bob"),),
    }
    assert sum(drv.api_calls.values()) == 0


async def test_create_fill_grant_observe_and_idempotence(kube: KubeCluster, tmp_path: Path) -> None:
    ns = unique("ns")
    t = tenant_in(ns)
    drv = KubernetesDriver("kubernetes.test", options(kube, tmp_path))
    try:
        gid = await build(drv, t, "ws.ledger-reader", "view", alice())
        again = await build(drv, t, "ws.ledger-reader", "view", alice())  # everything twice
        assert again == gid
        bindings = kube.admin.bindings(ns)
        assert list(bindings) == ["ws.ledger-reader"]
        b = bindings["ws.ledger-reader"]
        assert b["subjects"] == [
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": alice().id}
        ]
        assert b["metadata"]["labels"][MANAGED_BY_LABEL] == "replicator"
        assert b["metadata"]["annotations"][TENANT_ANNOTATION] == t.key
        assert kube.admin.allows(alice().id, "get", "pods", ns)
        assert kube.admin.denies("bob@example.com", "get", "pods", ns)

        drv.api_calls.clear()
        owned = [OwnedGroup("reader", "ws.ledger-reader", gid, frozenset({"view"}))]
        seen = await drv.observe(t, owned, {"reader": "ws.ledger-reader"})
        (g,) = seen.groups
        assert (g.id, g.members, g.roles) == (gid, frozenset({alice()}), frozenset({"view"}))
        assert not seen.vanished
        assert not seen.foreign
        assert dict(drv.api_calls) == {"LIST configmaps": 1, "LIST rolebindings": 1}

        await drv.apply(t, Change(Action.REMOVE_MEMBER, "ws.ledger-reader", "reader", user=alice()), gid)
        await drv.apply(t, Change(Action.REMOVE_MEMBER, "ws.ledger-reader", "reader", user=alice()), gid)
        assert kube.admin.binding(ns, "ws.ledger-reader").get("subjects") in (None, [])
        for _ in range(2):
            await drv.apply(t, Change(Action.REVOKE, "ws.ledger-reader", "reader", role="view"), gid)
        assert kube.admin.bindings(ns) == {}
        for _ in range(2):
            await drv.apply(t, Change(Action.DELETE_GROUP, "ws.ledger-reader", "reader"), gid)
        assert "ws.ledger-reader" not in kube.admin.configmaps(ns)
        assert kube.admin.namespace_exists(ns), "namespaces are never deleted"
    finally:
        await drv.close()


async def test_pending_record_is_adopted_only_for_its_tenant(kube: KubeCluster, tmp_path: Path) -> None:
    ns = unique("ns")
    t, other = tenant_in(ns), tenant_in(ns, "payroll")
    drv = KubernetesDriver("kubernetes.test", options(kube, tmp_path))
    gid = await build(drv, t, "ws.ledger-reader", "view", alice())
    pending = [OwnedGroup("reader", "ws.ledger-reader", None)]
    seen = await drv.observe(t, pending, {"reader": "ws.ledger-reader"})
    assert [g.id for g in seen.groups] == [gid]
    seen = await drv.observe(other, pending, {"reader": "ws.ledger-reader"})
    assert seen.groups == ()
    assert seen.foreign == {"ws.ledger-reader": gid}
    with pytest.raises(ForeignObjectError):
        await drv.apply(other, Change(Action.CREATE_GROUP, "ws.ledger-reader", "reader"), None)
    with pytest.raises(ForeignObjectError):
        await drv.apply(other, Change(Action.DELETE_GROUP, "ws.ledger-reader", "reader"), None)
    # a vanished anchor: reported, so that the plan recreates it
    kube.admin.delete(f"/api/v1/namespaces/{ns}/configmaps/ws.ledger-reader")
    seen = await drv.observe(t, [OwnedGroup("reader", "ws.ledger-reader", gid)], {})
    assert seen.vanished == ("ws.ledger-reader",)
    await drv.close()


async def test_foreign_binding_name_and_foreign_configmap(kube: KubeCluster, tmp_path: Path) -> None:
    ns = unique("ns")
    kube.admin.create_namespace(ns)
    kube.admin.create_binding(ns, "ws.ledger-admin", "view", ["erin"])
    kube.admin.request(
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ws.ledger-user"}},
    )
    t = tenant_in(ns)
    drv = KubernetesDriver("kubernetes.test", options(kube, tmp_path))
    seen = await drv.observe(
        t, [], {"admin": "ws.ledger-admin", "user": "ws.ledger-user", "x": "ws.ledger-x"}
    )
    assert sorted(seen.foreign) == ["ws.ledger-admin", "ws.ledger-user"]
    with pytest.raises(ForeignObjectError):
        await drv.apply(t, Change(Action.CREATE_GROUP, "ws.ledger-user", "user"), None)
    # A grant whose first-choice binding name is taken falls back to the hashed name.
    gid = await build(drv, t, "ws.ledger-admin", "admin", alice())
    names = sorted(kube.admin.bindings(ns))
    assert names[0] == "ws.ledger-admin"
    assert names[1].startswith("ws.ledger-admin-")
    assert kube.admin.binding(ns, "ws.ledger-admin")["subjects"][0]["name"] == "erin"
    await drv.apply(t, Change(Action.DELETE_GROUP, "ws.ledger-admin", "admin"), gid)
    assert list(kube.admin.bindings(ns)) == ["ws.ledger-admin"], "the foreign binding stays"
    await drv.close()


async def test_missing_namespace_is_a_permanent_error(kube: KubeCluster, tmp_path: Path) -> None:
    drv = KubernetesDriver("kubernetes.test", options(kube, tmp_path, createNamespaces=False))
    t = tenant_in(unique("absent"))
    assert (await drv.observe(t, [], {"reader": "ws.ledger-reader"})).groups == ()
    with pytest.raises(PermanentError, match="404"):
        await drv.apply(t, Change(Action.CREATE_GROUP, "ws.ledger-reader", "reader"), None)
    await drv.close()


async def test_bad_token_and_unreadable_secret_are_config_errors(kube: KubeCluster, tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("nope")
    drv = KubernetesDriver(
        "kubernetes.test",
        {"server": kube.server, "token": {"file": str(tmp_path / "bad")}, "caFile": str(kube.ca_file)},
    )
    with pytest.raises(PlatformConfigError, match="401"):
        await drv.observe(tenant_in("default"), [], {})
    missing = KubernetesDriver(
        "kubernetes.test", {"server": kube.server, "token": {"env": "REPLICATOR_NO_SUCH_VAR"}}
    )
    with pytest.raises(PlatformConfigError, match="REPLICATOR_NO_SUCH_VAR"):
        await missing.observe(tenant_in("default"), [], {})
    unverified = KubernetesDriver(
        "kubernetes.test", {"server": kube.server, "token": {"file": str(tmp_path / "bad")}}
    )
    with pytest.raises(PlatformConfigError):  # self-signed certificate, no caFile
        await unverified.observe(tenant_in("default"), [], {})


async def test_kubeconfig_context_and_insecure_skip(kube: KubeCluster, tmp_path: Path) -> None:
    cfg = kube.write_kubeconfig(tmp_path / "kubeconfig", context="ci")
    drv = KubernetesDriver("kubernetes.test", {"kubeconfig": str(cfg), "context": "ci"})
    assert (await drv.observe(tenant_in("default"), [], {})).groups == ()
    await drv.close()
    opts = options(kube, tmp_path, insecureSkipTlsVerify=True)
    del opts["caFile"]
    drv = KubernetesDriver("kubernetes.test", opts)
    assert (await drv.observe(tenant_in("default"), [], {})).groups == ()
    await drv.close()


@pytest.mark.parametrize("names", [3, 25], ids=["one GET each", "a paged LIST"])
async def test_openshift_lookup_marks_names_without_a_user_object(
    kube: KubeCluster, tmp_path: Path, names: int
) -> None:
    """OpenShift makes a User at the first login: names without one come back awaiting it."""
    prefix = unique("u")
    wanted = [f"{prefix}-{i}" for i in range(names)]
    logged_in = wanted[::2]
    for name in logged_in:
        kube.admin.log_in(name)
    drv = OpenShiftDriver("openshift.test", options(kube, tmp_path))
    drv.LOOKUP_PAGE = 4  # several pages of the cluster's Users
    try:
        found = await drv.lookup_users(wanted)
        assert {e: u.awaiting_login for e, (u,) in found.items()} == {e: e not in logged_in for e in wanted}
        assert all(u == PlatformUser(e, e) for e, (u,) in found.items())
        if names > OpenShiftDriver.LOOKUP_GETS:
            assert drv.api_calls["LIST users"] > 1, "paged"
            assert "GET users" not in drv.api_calls
        else:
            assert dict(drv.api_calls) == {"GET users": names}
    finally:
        await drv.close()
        for name in logged_in:
            kube.admin.forget_user(name)


async def test_openshift_group_and_binding(kube: KubeCluster, tmp_path: Path) -> None:
    ns = unique("ns")
    name = unique("ws") + ".ledger-reader"
    t = tenant_in(ns)
    drv = OpenShiftDriver("openshift.test", options(kube, tmp_path))
    gid = await build(drv, t, name, "view", alice())
    await build(drv, t, name, "view", alice())
    group = kube.admin.groups()[name]
    assert group["users"] == [alice().id]
    assert group["metadata"]["labels"][MANAGED_BY_LABEL] == "replicator"
    b = kube.admin.binding(ns, name)
    assert b["subjects"] == [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}]
    assert kube.admin.allows(alice().id, "get", "pods", ns, groups=(name,))

    drv.api_calls.clear()
    seen = await drv.observe(t, [OwnedGroup("reader", name, gid, frozenset({"view"}))], {"reader": name})
    (g,) = seen.groups
    assert (g.members, g.roles) == (frozenset({alice()}), frozenset({"view"}))
    assert dict(drv.api_calls) == {"LIST groups": 1, "LIST rolebindings": 1}

    await drv.apply(t, Change(Action.REMOVE_MEMBER, name, "reader", user=alice()), gid)
    assert kube.admin.groups()[name].get("users") in (None, [])
    await drv.apply(t, Change(Action.DELETE_GROUP, name, "reader"), gid)
    assert name not in kube.admin.groups()
    assert kube.admin.binding(ns, name) is None
    await drv.close()


def test_backend_script_caches_binaries_or_says_why(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "kube-backend.sh"
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(tmp_path),
        "REPLICATOR_KUBE_CACHE": str(tmp_path / "cache"),
        "REPLICATOR_KUBE_TARBALL": str(tmp_path / "absent.tgz"),
        "REPLICATOR_KUBE_NO_BUILD": "1",
    }
    if subprocess.run(["sh", "-c", "command -v etcd"], env=env, capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("no etcd on PATH (required in CI: scripts/kube-backend.sh installs it)")
        pytest.skip(reason="no etcd on PATH: run scripts/kube-backend.sh as root to install it")
    failed = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "no kube binaries" in failed.stderr
    tarball = ROOT.parent / "shared" / "testing" / "kube" / "kube-1.20.2-linux-amd64.tgz"
    if not tarball.exists():
        return
    env["REPLICATOR_KUBE_TARBALL"] = str(tarball)
    ok = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
    assert ok.stdout.splitlines()[-1] == f"KUBE_BIN={tmp_path / 'cache'}"
    assert (tmp_path / "cache" / "kube-apiserver").exists()
