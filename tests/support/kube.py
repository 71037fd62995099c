"""A real Kubernetes control plane for tests: etcd + kube-apiserver v1.20.2 + kube-controller-manager
on free loopback ports, token authentication, RBAC, and the OpenShift ``user.openshift.io/v1`` Group
registered as a CustomResourceDefinition. ``scripts/kube-backend.sh`` obtains the binaries.

Tests read the cluster back with :class:`KubeAdmin` (plain ``kubernetes`` client calls, never
through the driver)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.local_server import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kube-backend.sh"

def openshift_crd(kind: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A cluster-scoped ``user.openshift.io/v1`` kind registered as a CustomResourceDefinition."""
    plural = f"{kind.lower()}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.user.openshift.io"},
        "spec": {
            "group": "user.openshift.io",
            "scope": "Cluster",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": properties}},
                }
            ],
        },
    }


STRINGS = {"type": "array", "items": {"type": "string"}}
GROUP_CRD = openshift_crd("Group", {"users": STRINGS})
# OpenShift's User (user.openshift.io/v1, cluster-scoped): made by the OAuth server at a name's first
# login ("Upon log in, every user of the system receives a User and Identity resource", OKD's User
# and group APIs). A test makes one to stand for that login; the driver reads them to warn about
# memberships of names that never logged in.
USER_CRD = openshift_crd("User", {"fullName": {"type": "string"}, "identities": STRINGS})

Groups = tuple[str, ...]


class BackendUnavailableError(RuntimeError):
    """etcd or the kube binaries cannot be obtained on this machine."""


def obtain_binaries() -> tuple[str, Path]:
    """(etcd path, directory with kube-apiserver and kube-controller-manager) via the script."""
    env = dict(os.environ)
    env.setdefault("REPLICATOR_KUBE_NO_BUILD", "1")  # a 10 min build belongs in `make kube-backend`
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise BackendUnavailableError(proc.stderr.strip() or f"{SCRIPT} failed")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return values["ETCD"], Path(values["KUBE_BIN"])


class KubeCluster:
    """Start with ``with KubeCluster() as kube:``; everything is stopped and removed on exit."""

    def __init__(self) -> None:
        self.etcd, self.bin = obtain_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="replicator-kube-"))
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.ca_file = self.dir / "certs" / "apiserver.crt"
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> KubeCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))

    def _start(self) -> None:
        d = self.dir
        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                self.etcd,
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            ],
        )
        (d / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        key = d / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--insecure-port=0",
                f"--cert-dir={d / 'certs'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
            ],
        )
        self._wait_ready(90)
        kubeconfig = self.write_kubeconfig(d / "kubeconfig")
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--controllers=namespace,clusterrole-aggregation,garbagecollector",
                "--leader-elect=false",
                "--secure-port=0",
                "--port=0",
            ],
        )
        self.admin = KubeAdmin(self.server, self.token, self.ca_file)
        for crd in (GROUP_CRD, USER_CRD):
            self.admin.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        self._wait(60, self._crd_ready, "the OpenShift Group and User CRDs to be established")
        self._wait(60, self._view_has_rules, "the view ClusterRole to be aggregated")

    def _crd_ready(self) -> bool:
        for plural in ("groups", "users"):
            crd = self.admin.get(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.user.openshift.io"
            )
            conditions = ((crd or {}).get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return False
            if self.admin.get(f"/apis/user.openshift.io/v1/{plural}") is None:
                return False
        return True

    def _view_has_rules(self) -> bool:
        role = self.admin.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/view")
        return bool(role and role.get("rules"))

    def _wait(self, seconds: float, ready: Any, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a kube process exited while waiting for {what}: {p.args[0]}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, RuntimeError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.dir}")

    def _wait_ready(self, seconds: float) -> None:
        def ready() -> bool:
            req = urllib.request.Request(
                self.server + "/readyz", headers={"Authorization": f"Bearer {self.token}"}
            )
            with urllib.request.urlopen(req, context=_insecure(), timeout=2) as resp:
                return bool(resp.status == 200)

        self._wait(seconds, ready, "kube-apiserver /readyz")

    def write_kubeconfig(self, path: Path, context: str = "test") -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": "test", "user": "admin"}}],
            "current-context": context,
        }
        path.write_text(json.dumps(doc))
        return path

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class KubeAdmin:
    """Plain reads and writes with the admin token through the ``kubernetes`` client's REST layer."""

    def __init__(self, server: str, token: str, ca_file: Path | None = None) -> None:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = server
        cfg.ssl_ca_cert = str(ca_file) if ca_file else None
        cfg.verify_ssl = ca_file is not None
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        self.api = client.ApiClient(cfg)

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        method_, url, hdrs, body_, post = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        resp = self.api.call_api(method_, url, hdrs, body_, post)
        data = resp.read()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:500]!r}")
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except RuntimeError as e:
            if "HTTP 404" in str(e):
                return None
            raise

    # --- conveniences for assertions -------------------------------------------------------------

    def bindings(self, namespace: str) -> dict[str, dict[str, Any]]:
        doc = self.request("GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings")
        return {b["metadata"]["name"]: b for b in doc["items"]}

    def binding(self, namespace: str, name: str) -> Any:
        return self.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}")

    def configmaps(self, namespace: str) -> dict[str, dict[str, Any]]:
        doc = self.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
        return {c["metadata"]["name"]: c for c in doc["items"]}

    def create_namespace(self, name: str) -> None:
        self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def namespace_exists(self, name: str) -> bool:
        return self.get(f"/api/v1/namespaces/{name}") is not None

    def create_binding(
        self, namespace: str, name: str, role: str, users: list[str], labels: Any = None
    ) -> None:
        self.request(
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "labels": labels or {}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u} for u in users
                ],
            },
        )

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def log_in(self, name: str) -> None:
        """What OpenShift's OAuth server does at a name's first login: a User object of that name."""
        user = {"apiVersion": "user.openshift.io/v1", "kind": "User", "metadata": {"name": name}}
        self.request("POST", "/apis/user.openshift.io/v1/users", user)

    def forget_user(self, name: str) -> None:
        self.request("DELETE", f"/apis/user.openshift.io/v1/users/{name}")

    def groups(self) -> dict[str, dict[str, Any]]:
        doc = self.request("GET", "/apis/user.openshift.io/v1/groups")
        return {g["metadata"]["name"]: g for g in doc["items"]}

    def allows(
        self, user: str, verb: str, resource: str, namespace: str, groups: tuple[str, ...] = ()
    ) -> bool:
        """``user`` may do this, as the authorizer answers within a few seconds: the RBAC
        authorizer reads RoleBindings from an informer cache that trails the API's writes, so a
        SubjectAccessReview right after a write can still answer from before it."""
        return self._settles(True, user, verb, resource, namespace, groups)

    def denies(
        self, user: str, verb: str, resource: str, namespace: str, groups: tuple[str, ...] = ()
    ) -> bool:
        """``user`` may not do this, as the authorizer answers within a few seconds (see allows)."""
        return not self._settles(False, user, verb, resource, namespace, groups)

    def _settles(
        self, expected: bool, user: str, verb: str, resource: str, namespace: str, groups: tuple[str, ...]
    ) -> bool:
        """The authorizer's answer once it is ``expected``, or its last answer after 10 s."""
        deadline = time.monotonic() + 10.0
        while (answer := self.can(user, verb, resource, namespace, groups)) != expected:
            if time.monotonic() > deadline:
                return answer
            time.sleep(0.1)
        return answer

    def can(self, user: str, verb: str, resource: str, namespace: str, groups: tuple[str, ...] = ()) -> bool:
        """A SubjectAccessReview made with the admin token: may ``user`` do this (answered now)?"""
        review = self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": list(groups),
                    "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource},
                },
            },
        )
        return bool(review["status"].get("allowed"))


_shared: KubeCluster | None = None
_unavailable: str | None = None


def shared_cluster() -> KubeCluster:
    """The session's one cluster, started on first use and stopped at interpreter exit. Skips the
    test (fails it when ``CI=true``) when etcd or the kube binaries cannot be obtained."""
    import atexit

    import pytest

    global _shared, _unavailable
    if _shared is None and _unavailable is None:
        try:
            _shared = KubeCluster().__enter__()
            atexit.register(_shared.stop)
        except BackendUnavailableError as e:
            _unavailable = str(e)
    if _shared is None:
        reason = f"no Kubernetes test backend: {_unavailable}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (required in CI)")
        pytest.skip(reason=reason)
    return _shared


_counter = 0


def unique(prefix: str) -> str:
    """A name no other test of this session uses (namespaces, workspaces: the cluster is shared)."""
    global _counter
    _counter += 1
    return f"{prefix}{_counter}-{secrets.token_hex(2)}"
