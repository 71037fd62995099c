"""The CLI end to end against a real kube-apiserver (HTTPS, token auth, RBAC): Kubernetes RoleBindings
and OpenShift Groups. Results are read back with plain ``kubernetes`` client calls (tests/support/kube.py),
never through the driver; access is checked with SubjectAccessReviews."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from platforms.kubernetes import (
    GROUP_ANNOTATION,
    MANAGED_BY_LABEL,
    TENANT_ANNOTATION,
    KubernetesDriver,
    OpenShiftDriver,
)
from tests.e2e.harness import STANDARD, E2EProject, PlatformSpec, no_op_driver
from tests.support.kube import KubeAdmin, KubeCluster, shared_cluster, unique

pytestmark = pytest.mark.integration

PLATFORM = "kubernetes.test"
ROLES = {"admin": ("admin",), "user": ("edit",), "reader": ("view",)}
RB = "/apis/rbac.authorization.k8s.io/v1/namespaces"


@dataclass(kw_only=True)
class KubeProject(E2EProject):
    """The Kubernetes (or OpenShift) project, against the shared cluster: a fresh workspace and one
    fresh namespace per project, so that tests need no reset."""

    spec = PlatformSpec(PLATFORM, "kubernetes", "k8s-default", ROLES, replication={})
    kube: KubeCluster
    ws: str = field(default_factory=lambda: unique("ws"))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.local_ids = {p: unique(p) for p in ("ledger", "payroll")}
        (self.root / "token").write_text(self.kube.token + "\n")

    @property
    def namespaces(self) -> dict[str, str]:
        return self.local_ids

    @property
    def admin(self) -> KubeAdmin:
        return self.kube.admin

    def driver_options(self) -> dict[str, Any]:
        return {
            "server": self.kube.server,
            "token": {"file": str(self.root / "token")},
            "caFile": str(self.kube.ca_file),
            "createNamespaces": True,
            **self.driver_extra,
        }

    def group(self, prj: str, alias: str) -> str:
        return f"{self.ws}.{prj}-{alias}"

    def bindings(self, prj: str) -> dict[str, dict[str, Any]]:
        return self.admin.bindings(self.namespaces[prj])

    def subjects(self, prj: str, name: str) -> list[str]:
        b = self.bindings(prj)[name]
        return sorted(f"{s['kind']}:{s['name']}" for s in b.get("subjects") or [])

    def role_of(self, prj: str, name: str) -> str:
        return str(self.bindings(prj)[name]["roleRef"]["name"])

    def allows(self, who: str, verb: str, resource: str, prj: str, groups: tuple[str, ...] = ()) -> bool:
        return self.admin.allows(f"{who}@example.com", verb, resource, self.namespaces[prj], groups)

    def denies(self, who: str, verb: str, resource: str, prj: str, groups: tuple[str, ...] = ()) -> bool:
        return self.admin.denies(f"{who}@example.com", verb, resource, self.namespaces[prj], groups)


@pytest.fixture
def kp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> KubeProject:
    p = KubeProject(root=tmp_path, capsys=capsys, kube=shared_cluster())
    p.write_config()
    p.write_inventory(p.tenants(ledger=STANDARD, payroll={"admin": ("erin",), "reader": ("alice",)}))
    return p


def users(*names: str) -> list[str]:
    return [f"User:{n}@example.com" for n in names]


def test_full_reconcile_of_several_namespaces(kp: KubeProject) -> None:
    kp.plan_exit(2)
    assert not kp.admin.namespace_exists(kp.namespaces["ledger"]), "plan must not write"

    kp.converge()
    for prj in ("ledger", "payroll"):
        assert kp.admin.namespace_exists(kp.namespaces[prj])
    ledger = kp.bindings("ledger")
    assert sorted(ledger) == [kp.group("ledger", a) for a in ("admin", "reader", "user")]
    assert kp.subjects("ledger", kp.group("ledger", "admin")) == users("alice")
    assert kp.subjects("ledger", kp.group("ledger", "user")) == users("bob", "carol")
    assert kp.subjects("ledger", kp.group("ledger", "reader")) == users("dave")
    assert kp.role_of("ledger", kp.group("ledger", "user")) == "edit"
    assert kp.subjects("payroll", kp.group("payroll", "admin")) == users("erin")
    # every mapped role has its group, bound to nobody until someone holds the role
    assert sorted(kp.bindings("payroll")) == [kp.group("payroll", a) for a in ("admin", "reader", "user")]
    assert kp.subjects("payroll", kp.group("payroll", "user")) == []
    for b in ledger.values():
        assert b["metadata"]["labels"][MANAGED_BY_LABEL] == "replicator"
        assert b["metadata"]["annotations"][TENANT_ANNOTATION] == f"{kp.ws}/ledger/{PLATFORM}"
    anchors = kp.admin.configmaps(kp.namespaces["ledger"])
    assert (
        anchors[kp.group("ledger", "user")]["data"]["members"] == '["bob@example.com", "carol@example.com"]'
    )

    # The cluster really authorizes: dave may read pods, not delete them; erin has nothing in ledger.
    assert kp.allows("dave", "get", "pods", "ledger")
    assert kp.denies("dave", "delete", "pods", "ledger")
    assert kp.allows("bob", "delete", "pods", "ledger")
    assert kp.denies("erin", "get", "pods", "ledger")
    assert kp.allows("erin", "get", "pods", "payroll")

    kp.assert_converged()


def test_removed_binding_takes_the_subject_away(kp: KubeProject) -> None:
    kp.converge()
    assert kp.allows("carol", "delete", "pods", "ledger")
    kp.write_inventory(kp.tenants(ledger={**STANDARD, "user": ("bob",)}, payroll={"admin": ("erin",)}))
    kp.converge()
    assert kp.subjects("ledger", kp.group("ledger", "user")) == users("bob")
    assert kp.denies("carol", "get", "pods", "ledger")
    assert kp.allows("bob", "get", "pods", "ledger")
    assert kp.subjects("payroll", kp.group("payroll", "reader")) == []
    assert kp.denies("alice", "get", "pods", "payroll")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_changed_cluster_role_replaces_the_binding(kp: KubeProject) -> None:
    kp.converge()
    reader = kp.group("ledger", "reader")
    old_uid = kp.bindings("ledger")[reader]["metadata"]["uid"]
    kp.mappings["reader"] = ["edit"]
    kp.write_config()
    plan = kp.cli("plan", "-o", "json").json()
    ledger = next(t for t in plan["tenants"] if "/ledger/" in t["tenant"])
    assert [(c["action"], c.get("role")) for c in ledger["changes"]] == [
        ("grant", "edit"),
        ("revoke", "view"),
    ]

    kp.converge()
    mine = {
        n: b
        for n, b in kp.bindings("ledger").items()
        if b["metadata"]["annotations"][GROUP_ANNOTATION] == reader
    }
    (name,) = mine
    assert name.startswith(reader + "-"), "the new roleRef needs a new binding (roleRef is immutable)"
    assert mine[name]["roleRef"]["name"] == "edit"
    assert mine[name]["metadata"]["uid"] != old_uid
    assert kp.subjects("ledger", name) == users("dave")
    assert kp.allows("dave", "delete", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_several_cluster_roles_get_one_binding_each(kp: KubeProject) -> None:
    kp.mappings["reader"] = ["view", "system:aggregate-to-view"]
    kp.write_config()
    kp.converge()
    reader = kp.group("ledger", "reader")
    mine = {n: b["roleRef"]["name"] for n, b in kp.bindings("ledger").items() if n.startswith(reader)}
    assert sorted(mine.values()) == ["system:aggregate-to-view", "view"]
    assert reader in mine
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_pattern_change_renames(kp: KubeProject) -> None:
    kp.converge()
    kp.pattern = "#{projectIdentifier}-#{platformGroupAlias}"
    kp.write_config()
    kp.converge()
    assert sorted(kp.bindings("ledger")) == ["ledger-admin", "ledger-reader", "ledger-user"]
    anchors = kp.admin.configmaps(kp.namespaces["ledger"])
    ours = sorted(n for n, c in anchors.items() if (c["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL))
    assert ours == ["ledger-admin", "ledger-reader", "ledger-user"]
    assert kp.subjects("ledger", "ledger-user") == users("bob", "carol")
    assert kp.allows("carol", "get", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_foreign_rolebinding_with_our_name_is_left_alone(kp: KubeProject) -> None:
    ns = kp.namespaces["ledger"]
    kp.admin.create_namespace(ns)
    admin = kp.group("ledger", "admin")
    kp.admin.create_binding(ns, admin, "view", ["erin@example.com"])
    r = kp.converge()
    assert "FOREIGN_GROUP_NAME_TAKEN" in r.out
    foreign = kp.bindings("ledger")[admin]
    assert "labels" not in foreign["metadata"] or not foreign["metadata"]["labels"]
    assert kp.subjects("ledger", admin) == users("erin")
    assert foreign["roleRef"]["name"] == "view"
    assert admin not in kp.admin.configmaps(ns)
    assert kp.subjects("ledger", kp.group("ledger", "user")) == users("bob", "carol")
    assert kp.denies("alice", "get", "pods", "ledger")


def test_drift_is_repaired(kp: KubeProject) -> None:
    kp.converge()
    ns = kp.namespaces["ledger"]
    user_binding = kp.bindings("ledger")[kp.group("ledger", "user")]
    user_binding["subjects"] = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}]
    kp.admin.request("PUT", f"{RB}/{ns}/rolebindings/{kp.group('ledger', 'user')}", user_binding)
    kp.admin.delete(f"{RB}/{ns}/rolebindings/{kp.group('ledger', 'reader')}")
    assert kp.denies("dave", "get", "pods", "ledger")

    plan = kp.cli("plan", "--detailed-exitcode")
    assert plan.code == 2
    kp.converge()
    assert kp.subjects("ledger", kp.group("ledger", "user")) == users("bob", "carol")
    assert kp.subjects("ledger", kp.group("ledger", "reader")) == users("dave")
    assert kp.admin.denies("mallory", "get", "pods", ns)
    assert kp.allows("dave", "get", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_deleted_anchor_is_recreated(kp: KubeProject) -> None:
    kp.converge()
    ns = kp.namespaces["ledger"]
    kp.admin.delete(f"/api/v1/namespaces/{ns}/configmaps/{kp.group('ledger', 'admin')}")
    kp.converge()
    assert kp.group("ledger", "admin") in kp.admin.configmaps(ns)
    assert kp.subjects("ledger", kp.group("ledger", "admin")) == users("alice")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_group_subject_mode(kp: KubeProject) -> None:
    kp.driver_extra = {"subjects": "group"}
    kp.write_config()
    kp.converge()
    user_group = kp.group("ledger", "user")
    assert kp.subjects("ledger", user_group) == [f"Group:{user_group}"]
    anchors = kp.admin.configmaps(kp.namespaces["ledger"])
    assert anchors[user_group]["data"]["members"] == '["bob@example.com", "carol@example.com"]'
    # The authenticator (OIDC) puts bob in the group: then he may; without the group he may not.
    assert kp.allows("bob", "delete", "pods", "ledger", groups=(user_group,))
    assert kp.denies("bob", "get", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0

    kp.write_inventory(
        kp.tenants(ledger={**STANDARD, "user": ("bob",)}, payroll={"admin": ("erin",), "reader": ("alice",)})
    )
    kp.converge()
    assert (
        kp.admin.configmaps(kp.namespaces["ledger"])[user_group]["data"]["members"] == '["bob@example.com"]'
    )
    assert kp.subjects("ledger", user_group) == [f"Group:{user_group}"]
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_missing_namespace_fails_the_tenant_without_create_namespaces(kp: KubeProject) -> None:
    kp.driver_extra = {"createNamespaces": False}
    kp.write_config()
    kp.admin.create_namespace(kp.namespaces["payroll"])
    r = kp.cli("reconcile", "--all")
    assert r.code != 0
    assert "not found" in (r.out + r.err)
    assert not kp.admin.namespace_exists(kp.namespaces["ledger"])
    assert kp.subjects("payroll", kp.group("payroll", "reader")) == users("alice")


def test_validate_reports_names_kubernetes_refuses(kp: KubeProject) -> None:
    kp.pattern = "#{workspaceIdentifier}_#{projectIdentifier}-#{platformGroupAlias}"
    kp.write_config()
    r = kp.cli("validate")
    assert r.code != 0
    assert "characters the platform refuses" in r.out + r.err


def _no_op_calls(kp: KubeProject) -> dict[str, int]:
    driver_type = OpenShiftDriver if kp.type == "openshift" else KubernetesDriver
    return dict(no_op_driver(kp, driver_type).api_calls)


def test_no_op_reconcile_makes_two_calls_per_tenant(kp: KubeProject) -> None:
    kp.converge()
    assert _no_op_calls(kp) == {"LIST configmaps": 2, "LIST rolebindings": 2}


def test_openshift_groups_filled_and_bound(kp: KubeProject) -> None:
    kp.type = "openshift"
    kp.write_config()
    kp.converge()
    groups = kp.admin.groups()
    user_group = kp.group("ledger", "user")
    assert sorted(groups[user_group]["users"]) == ["bob@example.com", "carol@example.com"]
    assert groups[user_group]["metadata"]["labels"][MANAGED_BY_LABEL] == "replicator"
    assert sorted(groups[kp.group("ledger", "admin")]["users"]) == ["alice@example.com"]
    assert kp.subjects("ledger", user_group) == [f"Group:{user_group}"]
    assert kp.role_of("ledger", user_group) == "edit"
    assert kp.allows("carol", "delete", "pods", "ledger", groups=(user_group,))
    assert kp.denies("carol", "get", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0
    # The five names never logged in (no User objects here): asked again on every run, not cached.
    assert _no_op_calls(kp) == {"LIST groups": 2, "LIST rolebindings": 2, "GET users": 5}

    kp.write_inventory(
        kp.tenants(ledger={**STANDARD, "user": ("bob",)}, payroll={"admin": ("erin",), "reader": ("alice",)})
    )
    kp.converge()
    assert kp.admin.groups()[user_group]["users"] == ["bob@example.com"]
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_openshift_member_who_never_logged_in_is_added_with_a_warning(kp: KubeProject) -> None:
    """A Group may name any user, but OpenShift makes the User only at the first login: carol has
    none yet, so her membership is written and plan, reconcile and status warn."""
    kp.type = "openshift"
    # Plain names: a custom resource's name must be a DNS subdomain, stricter than OpenShift's own
    # User names (which take the identity provider's name, an email address included).
    kp.platform_extra = {"euidPattern": "%s"}
    kp.write_config()
    present = ["alice", "bob", "dave", "erin"]
    for name in present:
        kp.admin.log_in(name)
    try:
        r = kp.cli("plan")
        assert "+ add member carol to" in r.out
        awaiting = "USER_AWAITING_LOGIN: user carol: the platform has no user 'carol' yet"
        assert awaiting in r.out
        assert r.out.count("USER_AWAITING_LOGIN") == 1, r.out
        kp.converge()
        assert "carol" in kp.admin.groups()[kp.group("ledger", "user")]["users"]
        status = kp.cli("status", "-o", "json").json()
        codes = {w["code"] for t in status["tenants"] for w in t["warnings"]}
        assert "USER_AWAITING_LOGIN" in codes

        kp.admin.log_in("carol")
        present.append("carol")
        r = kp.cli("reconcile", "--all", "--fail-on-warnings")
        assert r.code == 0, r.out + r.err
        assert "USER_AWAITING_LOGIN" not in r.out
    finally:
        for name in present:
            kp.admin.forget_user(name)


def test_openshift_keeps_external_grants(kp: KubeProject) -> None:
    kp.type = "openshift"
    kp.write_config()
    kp.converge()
    ns = kp.namespaces["ledger"]
    reader = kp.group("ledger", "reader")
    kp.admin.request(
        "POST",
        f"{RB}/{ns}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "by-hand"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": reader}],
        },
    )
    r = kp.cli("plan", "--detailed-exitcode")
    assert r.code == 0, r.out
    kp.platform_extra = {"externalGrants": "remove"}
    kp.write_config()
    kp.converge()
    assert kp.subjects("ledger", "by-hand") == [], "our Group is taken out of the foreign binding"
    assert kp.role_of("ledger", "by-hand") == "edit"
    assert kp.subjects("ledger", reader) == [f"Group:{reader}"]
