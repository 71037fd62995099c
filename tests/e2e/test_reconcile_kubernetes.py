"""The CLI end to end against a real kube-apiserver (HTTPS, token auth, RBAC): Kubernetes RoleBindings
and OpenShift Groups. Results are read back with plain ``kubernetes`` client calls (tests/support/kube.py),
never through the driver; access is checked with SubjectAccessReviews."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from platforms.kubernetes import GROUP_ANNOTATION, MANAGED_BY_LABEL, TENANT_ANNOTATION
from platforms.kubernetes.base import RbacDriver
from replicator.cli import main
from replicator.engine import Engine, default_driver
from replicator.loader import load
from replicator.validate import validate
from state import Store
from tests.e2e.conftest import Result, binding, project, tenant, user, workspace
from tests.support.kube import KubeAdmin, KubeCluster, shared_cluster, unique

pytestmark = pytest.mark.integration

PLATFORM = "kubernetes.test"
ROLES = {"admin": ["admin"], "user": ["edit"], "reader": ["view"]}
RB = "/apis/rbac.authorization.k8s.io/v1/namespaces"


@dataclass
class KubeProject:
    """A replicator.yaml plus inventory in a temporary directory, against the shared cluster."""

    root: Path
    kube: KubeCluster
    capsys: pytest.CaptureFixture[str]
    type: str = "kubernetes"
    ws: str = field(default_factory=lambda: unique("ws"))
    namespaces: dict[str, str] = field(default_factory=dict)
    pattern: str = "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"
    options: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in ROLES.items()})
    external_grants: str | None = None

    def __post_init__(self) -> None:
        self.namespaces = {p: unique(p) for p in ("ledger", "payroll")}
        (self.root / "token").write_text(self.kube.token + "\n")

    @property
    def admin(self) -> KubeAdmin:
        return self.kube.admin

    @property
    def config_path(self) -> Path:
        return self.root / "replicator.yaml"

    def write_config(self) -> None:
        block = {
            "server": self.kube.server,
            "token": {"file": str(self.root / "token")},
            "caFile": str(self.kube.ca_file),
            "createNamespaces": True,
            **self.options,
        }
        platform: dict[str, Any] = {
            "identifier": PLATFORM,
            "type": self.type,
            "euidPattern": "%s@example.com",
            "userGroupNamePattern": self.pattern,
            self.type: block,
        }
        if self.external_grants:
            platform["externalGrants"] = self.external_grants
        config = {
            "state": "sqlite:///state.db",
            "inventory": ["inventory"],
            "platforms": [platform],
            "landingZones": [
                {
                    "identifier": "k8s-default",
                    "platform": PLATFORM,
                    "roleMappings": {
                        role: {"platformGroupAlias": role, "platformRoles": cluster_roles}
                        for role, cluster_roles in self.roles.items()
                    },
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_inventory(self, **bindings_by_project: dict[str, tuple[str, ...]]) -> None:
        docs = [user(n, n) for n in ("alice", "bob", "carol", "dave", "erin")]
        docs.append(workspace(self.ws))
        for prj, roles in bindings_by_project.items():
            docs.append(project(self.ws, prj))
            docs.append(tenant(self.ws, prj, self.namespaces[prj], platform=PLATFORM, zone="k8s-default"))
            docs += [binding(self.ws, prj, role, *users) for role, users in roles.items() if users]
        inv = self.root / "inventory"
        inv.mkdir(exist_ok=True)
        (inv / "org.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))

    def cli(self, *args: str) -> Result:
        self.capsys.readouterr()
        code = main(["-c", str(self.config_path), "--log-format", "json", *args])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def converge(self, *extra: str) -> Result:
        r = self.cli("reconcile", "--all", *extra)
        assert r.code == 0, r.out + r.err
        return r

    def group(self, prj: str, alias: str) -> str:
        return f"{self.ws}.{prj}-{alias}"

    def bindings(self, prj: str) -> dict[str, dict[str, Any]]:
        return self.admin.bindings(self.namespaces[prj])

    def subjects(self, prj: str, name: str) -> list[str]:
        b = self.bindings(prj)[name]
        return sorted(f"{s['kind']}:{s['name']}" for s in b.get("subjects") or [])

    def role_of(self, prj: str, name: str) -> str:
        return str(self.bindings(prj)[name]["roleRef"]["name"])

    def can(self, who: str, verb: str, resource: str, prj: str, groups: tuple[str, ...] = ()) -> bool:
        return self.admin.can(f"{who}@example.com", verb, resource, self.namespaces[prj], groups)


STANDARD = {"admin": ("alice",), "user": ("bob", "carol"), "reader": ("dave",)}


@pytest.fixture
def kp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> KubeProject:
    p = KubeProject(tmp_path, shared_cluster(), capsys)
    p.write_config()
    p.write_inventory(ledger=STANDARD, payroll={"admin": ("erin",), "reader": ("alice",)})
    return p


def users(*names: str) -> list[str]:
    return [f"User:{n}@example.com" for n in names]


def test_full_reconcile_of_several_namespaces(kp: KubeProject) -> None:
    before = kp.cli("plan", "--detailed-exitcode")
    assert before.code == 2, before.err
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
    assert kp.can("dave", "get", "pods", "ledger")
    assert not kp.can("dave", "delete", "pods", "ledger")
    assert kp.can("bob", "delete", "pods", "ledger")
    assert not kp.can("erin", "get", "pods", "ledger")
    assert kp.can("erin", "get", "pods", "payroll")

    after = kp.cli("plan", "--detailed-exitcode")
    assert after.code == 0, after.out + after.err
    assert "Plan: 0 to add, 0 to remove, 0 warnings." in after.out


def test_removed_binding_takes_the_subject_away(kp: KubeProject) -> None:
    kp.converge()
    assert kp.can("carol", "delete", "pods", "ledger")
    kp.write_inventory(ledger={**STANDARD, "user": ("bob",)}, payroll={"admin": ("erin",)})
    kp.converge()
    assert kp.subjects("ledger", kp.group("ledger", "user")) == users("bob")
    assert not kp.can("carol", "get", "pods", "ledger")
    assert kp.can("bob", "get", "pods", "ledger")
    assert kp.subjects("payroll", kp.group("payroll", "reader")) == []
    assert not kp.can("alice", "get", "pods", "payroll")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_changed_cluster_role_replaces_the_binding(kp: KubeProject) -> None:
    kp.converge()
    reader = kp.group("ledger", "reader")
    old_uid = kp.bindings("ledger")[reader]["metadata"]["uid"]
    kp.roles["reader"] = ["edit"]
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
    assert kp.can("dave", "delete", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_several_cluster_roles_get_one_binding_each(kp: KubeProject) -> None:
    kp.roles["reader"] = ["view", "system:aggregate-to-view"]
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
    assert kp.can("carol", "get", "pods", "ledger")
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
    assert not kp.can("alice", "get", "pods", "ledger")


def test_drift_is_repaired(kp: KubeProject) -> None:
    kp.converge()
    ns = kp.namespaces["ledger"]
    user_binding = kp.bindings("ledger")[kp.group("ledger", "user")]
    user_binding["subjects"] = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}]
    kp.admin.request("PUT", f"{RB}/{ns}/rolebindings/{kp.group('ledger', 'user')}", user_binding)
    kp.admin.delete(f"{RB}/{ns}/rolebindings/{kp.group('ledger', 'reader')}")
    assert not kp.can("dave", "get", "pods", "ledger")

    plan = kp.cli("plan", "--detailed-exitcode")
    assert plan.code == 2
    kp.converge()
    assert kp.subjects("ledger", kp.group("ledger", "user")) == users("bob", "carol")
    assert kp.subjects("ledger", kp.group("ledger", "reader")) == users("dave")
    assert kp.admin.can("mallory", "get", "pods", ns) is False
    assert kp.can("dave", "get", "pods", "ledger")
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
    kp.options = {"subjects": "group"}
    kp.write_config()
    kp.converge()
    user_group = kp.group("ledger", "user")
    assert kp.subjects("ledger", user_group) == [f"Group:{user_group}"]
    anchors = kp.admin.configmaps(kp.namespaces["ledger"])
    assert anchors[user_group]["data"]["members"] == '["bob@example.com", "carol@example.com"]'
    # The authenticator (OIDC) puts bob in the group: then he may; without the group he may not.
    assert kp.can("bob", "delete", "pods", "ledger", groups=(user_group,))
    assert not kp.can("bob", "get", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0

    kp.write_inventory(
        ledger={**STANDARD, "user": ("bob",)}, payroll={"admin": ("erin",), "reader": ("alice",)}
    )
    kp.converge()
    assert (
        kp.admin.configmaps(kp.namespaces["ledger"])[user_group]["data"]["members"] == '["bob@example.com"]'
    )
    assert kp.subjects("ledger", user_group) == [f"Group:{user_group}"]
    assert kp.cli("plan", "--detailed-exitcode").code == 0


def test_missing_namespace_fails_the_tenant_without_create_namespaces(kp: KubeProject) -> None:
    kp.options = {"createNamespaces": False}
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
    drivers: list[RbacDriver] = []

    def capture(platform):  # type: ignore[no-untyped-def]
        driver = default_driver(platform)
        assert isinstance(driver, RbacDriver)
        drivers.append(driver)
        return driver

    engine = Engine(
        validate(load(kp.config_path)), Store(f"sqlite:///{kp.root / 'state.db'}"), make_driver=capture
    )
    now = datetime.now(UTC)
    report = asyncio.run(engine.run(engine.select(now), apply=True, now=now))
    assert report.failed == []
    assert [r.applied for r in report.results] == [0, 0]
    (driver,) = drivers
    return dict(driver.api_calls)


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
    assert kp.can("carol", "delete", "pods", "ledger", groups=(user_group,))
    assert not kp.can("carol", "get", "pods", "ledger")
    assert kp.cli("plan", "--detailed-exitcode").code == 0
    assert _no_op_calls(kp) == {"LIST groups": 2, "LIST rolebindings": 2}

    kp.write_inventory(
        ledger={**STANDARD, "user": ("bob",)}, payroll={"admin": ("erin",), "reader": ("alice",)}
    )
    kp.converge()
    assert kp.admin.groups()[user_group]["users"] == ["bob@example.com"]
    assert kp.cli("plan", "--detailed-exitcode").code == 0


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
    kp.external_grants = "remove"
    kp.write_config()
    kp.converge()
    assert kp.subjects("ledger", "by-hand") == [], "our Group is taken out of the foreign binding"
    assert kp.role_of("ledger", "by-hand") == "edit"
    assert kp.subjects("ledger", reader) == [f"Group:{reader}"]
