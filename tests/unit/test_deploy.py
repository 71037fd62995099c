"""The Kubernetes manifests (deploy/kubernetes) checked against the image and the code they run,
without a cluster: routes, ports, the image's user, the CLI's own argument parser and validation,
the daemon's grace period; kustomize builds them."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from replicator.cli import main as run_cli
from replicator.cli.parser import build_parser
from replicator.inputs.loader import load_config
from replicator.service.daemon import Daemon
from tests.support.dockerfile import Stage, exposed_port, image_uid

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
PLACEHOLDER = "CHANGE-ME"


# --- Kubernetes manifests ---------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.y*ml"))


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifest_files():
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path.name}: a manifest is a mapping"
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, f"{path.name}: no {key}"
            assert doc["metadata"].get("name"), f"{path.name}: no metadata.name"
            docs.append({**doc, "_file": path.name})
    return docs


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] if c["name"] == "replicator"]
    found: dict[str, Any] = c
    return found


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in container["ports"]], f"no container port {port}"
        return port
    named = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert named, f"no container port named {port!r}"
    return int(named[0])


def test_every_manifest_loads_and_kustomization_lists_the_resources(
    objects: list[dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    resources = kustomization["resources"]
    for r in resources:
        assert (DEPLOY / r).is_file(), f"kustomization.yaml lists {r}, which does not exist"
    for path in manifest_files():
        if path.name != "kustomization.yaml":
            assert path.name in resources or path.name.endswith(".example.yaml"), (
                f"{path.name} is neither a resource of kustomization.yaml nor a *.example.yaml template"
            )
    kinds = {o["kind"] for o in objects if o["_file"] in resources}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    } <= kinds
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert kustomization["namespace"] == namespace


def test_secrets_are_templates_with_placeholders_only(
    objects: list[dict[str, Any]], kustomization: dict[str, Any]
) -> None:
    secrets = by_kind(objects, "Secret")
    assert secrets
    for s in secrets:
        # Applied by `kubectl apply -k`, a template would overwrite the real Secret on every apply.
        assert s["_file"] not in kustomization["resources"], f"{s['_file']} must not be a kustomize resource"
        assert s["_file"].endswith(".example.yaml")
        assert "data" not in s, "templates use stringData with visible placeholders"
        for key, value in s["stringData"].items():
            assert PLACEHOLDER in value, f"{s['metadata']['name']}.{key} is not a {PLACEHOLDER} placeholder"


def test_deployment_shape(deployment: dict[str, Any], pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    args = build_parser().parse_args(container["args"])
    assert args.command == "run"
    assert args.replica_id == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"resources.{kind}: cpu and memory"


def test_container_port_is_where_the_daemon_listens(final: Stage, container: dict[str, Any]) -> None:
    args = build_parser().parse_args(container["args"])
    port = int(args.listen.rpartition(":")[2])
    assert container_port(container, "http") == port == exposed_port(final)


@pytest.mark.parametrize(
    ("probe", "path"),
    [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")],
)
def test_probes_hit_routes_of_the_app(
    container: dict[str, Any], get_routes: set[str], probe: str, path: str
) -> None:
    get = container[probe]["httpGet"]
    assert get["path"] == path
    assert get["path"] in get_routes, f"{probe} asks {get['path']}, the app serves {sorted(get_routes)}"
    args = build_parser().parse_args(container["args"])
    assert container_port(container, get["port"]) == int(args.listen.rpartition(":")[2])


def test_prometheus_annotations(
    deployment: dict[str, Any], container: dict[str, Any], get_routes: set[str]
) -> None:
    notes = deployment["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == container_port(container, "http")
    assert notes["prometheus.io/path"] == "/metrics"
    assert notes["prometheus.io/path"] in get_routes


def test_security_context(final: Stage, pod: dict[str, Any], container: dict[str, Any]) -> None:
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == image_uid(final) != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for name in mounts.values():
        assert name in volumes, f"volumeMount {name} has no volume"
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"


def test_termination_grace_covers_the_daemons(pod: dict[str, Any], container: dict[str, Any]) -> None:
    grace = build_parser().parse_args(container["args"]).grace
    default = next(f.default for f in dataclasses.fields(Daemon) if f.name == "grace")
    assert isinstance(default, float)
    # After `grace` the daemon still cancels what is left (releasing leases), stops the server and
    # closes the store: leave it a few seconds before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= max(grace, default) + 5


def test_no_service_links(pod: dict[str, Any]) -> None:
    # A Service named replicator would inject REPLICATOR_SERVICE_HOST, ... = config overrides.
    assert pod.get("enableServiceLinks") is False


def test_service_account_and_config_references(objects: list[dict[str, Any]], pod: dict[str, Any]) -> None:
    assert pod["serviceAccountName"] in {o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")}
    configmaps = {o["metadata"]["name"] for o in by_kind(objects, "ConfigMap")}
    for v in pod["volumes"]:
        for source in [v, *v.get("projected", {}).get("sources", [])]:
            if "configMap" in source:
                assert source["configMap"]["name"] in configmaps


def test_service_and_pdb_select_the_pods(
    objects: list[dict[str, Any]], deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        container_port(container, port["targetPort"])
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a drain must be able to proceed"


# --- the config in the ConfigMap, as the pod sees it --------------------------------------------------


def service_link_env(services: list[dict[str, Any]]) -> dict[str, str]:
    """What the kubelet injects for each Service of the namespace unless enableServiceLinks is false."""
    env: dict[str, str] = {}
    for s in services:
        name = s["metadata"]["name"].upper().replace("-", "_")
        ports = s["spec"]["ports"]
        env[f"{name}_SERVICE_HOST"] = "10.0.0.10"
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{name}_PORT"] = f"tcp://10.0.0.10:{ports[0]['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            if "name" in p:
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            prefix = f"{name}_PORT_{p['port']}_{proto}"
            env[prefix] = f"{proto.lower()}://10.0.0.10:{p['port']}"
            env[f"{prefix}_PROTO"], env[f"{prefix}_PORT"] = proto.lower(), str(p["port"])
            env[f"{prefix}_ADDR"] = "10.0.0.10"
    return env


def pod_env(
    final: Stage, objects: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    """The container's environment: the image's ENV, the Deployment's env and envFrom with the
    Secret templates' placeholders, and the service links if they are on."""
    secrets = {s["metadata"]["name"]: s["stringData"] for s in by_kind(objects, "Secret")}
    env = dict(final.env())
    if pod.get("enableServiceLinks", True):
        env.update(service_link_env(by_kind(objects, "Service")))
    for source in container.get("envFrom", []):
        ref = source["secretRef"]["name"]
        assert ref in secrets, f"envFrom names the Secret {ref}, which has no template"
        env.update(secrets[ref])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets.get(ref["name"], {}), f"{var['name']}: no template for {ref}"
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = "replicator-5d8f7c9b4-x2x7q"
    return env


@pytest.fixture
def mounted_config(
    tmp_path: Path,
    final: Stage,
    objects: list[dict[str, Any]],
    pod: dict[str, Any],
    container: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, list[str]]:
    """The config volume written to tmp_path as the kubelet lays it out, and the pod's environment
    in os.environ. Returns the config file and the files of the inventory ConfigMap(s)."""
    config_path = PurePosixPath(final.env()["REPLICATOR_CONFIG"])
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container["volumeMounts"]}
    assert str(config_path.parent) in mounts, f"nothing is mounted at {config_path.parent}"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[str(config_path.parent)]]
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    configmaps = {o["metadata"]["name"]: o for o in by_kind(objects, "ConfigMap")}
    inventory: list[str] = []
    for source in sources:
        cm = configmaps[source["configMap"]["name"]]
        items = source["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]
        for item in items:
            target = tmp_path / item["path"]
            assert not target.exists(), f"two ConfigMap keys land on {item['path']}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cm["data"][item["key"]])
            if item["path"] != config_path.name:
                inventory.append(item["path"])
    assert (tmp_path / config_path.name).is_file(), f"no ConfigMap key {config_path.name}"
    for name in list(os.environ):
        if name.startswith("REPLICATOR_"):
            monkeypatch.delenv(name)
    for name, value in pod_env(final, objects, pod, container).items():
        monkeypatch.setenv(name, value)
    return tmp_path / config_path.name, inventory


def test_configmap_config_passes_validation(mounted_config: tuple[Path, list[str]]) -> None:
    config_path, _ = mounted_config
    assert run_cli(["-c", str(config_path), "validate"]) == 0


def test_configmap_config_reads_every_inventory_file_and_uses_postgres(
    mounted_config: tuple[Path, list[str]], stages: list[Stage]
) -> None:
    config_path, inventory = mounted_config
    config, _, problems = load_config(config_path)
    assert config is not None, problems
    assert sorted(config.inventory) == sorted(inventory), "a key of the inventory ConfigMap is not read"
    assert config.state.startswith("postgresql"), "replicas share work only through a PostgreSQL store"
    extras = set((stages[0].args()["EXTRAS"] or "").split(","))
    assert "postgres" in extras
    for platform in config.platforms:
        assert platform.type in extras, f"the image lacks the {platform.type} extra the example config needs"


# --- README and kustomize ---------------------------------------------------------------------------


def test_readme_build_command_names_real_extras(pyproject: dict[str, Any]) -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "kubectl apply -k" in readme
    commands = re.findall(r"docker build --build-arg EXTRAS=(\S+) ", readme)
    assert commands, "README.md: no `docker build --build-arg EXTRAS=...` command"
    for extras in commands:
        assert set(extras.split(",")) <= set(pyproject["project"]["optional-dependencies"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds(kustomization: dict[str, Any]) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert not [d for d in built if d["kind"] == "Secret"]
    for d in built:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == kustomization["namespace"]
    (deployment,) = [d for d in built if d["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{kustomization['images'][0]['newName']}:{kustomization['images'][0]['newTag']}"
