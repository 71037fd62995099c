"""The container image (Dockerfile, .dockerignore) and the Kubernetes example
(deploy/kubernetes) checked against the code they package, without a Docker engine or a
cluster: routes, ports, the console script, the extras, the CLI's own argument parser and
validation, the daemon's grace period."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from replicator.cli import main as run_cli
from replicator.cli.parser import build_parser
from replicator.inputs.loader import load_config
from replicator.service.daemon import Daemon
from replicator.service.server import build_app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy" / "kubernetes"
PLACEHOLDER = "CHANGE-ME"


# --- Dockerfile ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.image}"
        return found[-1]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for rest in self.all("ENV"):
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {rest!r}: write KEY=VALUE"
                out[key] = value
        return out

    def args(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for rest in self.all("ARG"):
            key, sep, value = rest.strip().partition("=")
            out[key] = value if sep else None
        return out


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage: comment lines dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(pending.strip())
        pending = ""
    assert not pending.strip(), "the Dockerfile ends inside a continuation line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"{rest!r} is not the exec (JSON array) form"
    assert all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def get_routes() -> set[str]:
    """Paths the daemon's ASGI app answers with GET (what probes and HEALTHCHECK may use)."""
    app = build_app(None)  # type: ignore[arg-type]  # handlers use the daemon only per request
    return {getattr(r, "path", "") for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}


def exposed_port(final: Stage) -> int:
    ports = [p for rest in final.all("EXPOSE") for p in rest.split()]
    assert len(ports) == 1, f"expected one EXPOSEd port, got {ports}"
    return int(ports[0].split("/")[0])


def image_uid(final: Stage) -> int:
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: use a numeric uid (Kubernetes' runAsNonRoot can only check numbers)"
    assert not gid or gid.isdigit(), f"USER {user}: use a numeric gid"
    return int(uid)


def test_multi_stage_on_slim_python_311(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2, "build in one stage, run in another"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.image), stage.image
    # The venv built in the first stage points at the base image's interpreter: same image.
    assert final.image == stages[0].image
    assert any(rest.startswith("--from=") and "/opt/venv" in rest for rest in final.all("COPY"))


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    assert image_uid(final) != 0


def test_final_stage_installs_and_builds_nothing(final: Stage) -> None:
    for rest in final.all("RUN"):
        for tool in ("pip install", "pip wheel", "apt-get install", "apt install", "gcc", "build-essential"):
            assert tool not in rest, f"final stage runs {tool!r}: build in the first stage"


def test_build_stage_pip_settings(stages: list[Stage]) -> None:
    env = stages[0].env()
    assert env.get("PIP_NO_COMPILE") == "1"
    assert env.get("PIP_NO_CACHE_DIR") in ("1", "off", "true")


def test_extras_are_a_build_arg_naming_real_extras(stages: list[Stage], pyproject: dict[str, Any]) -> None:
    build = stages[0]
    default = build.args().get("EXTRAS")
    assert default, "ARG EXTRAS=<extras> with a default in the build stage"
    extras = default.split(",")
    known = set(pyproject["project"]["optional-dependencies"])
    for extra in extras:
        assert extra in known, f"EXTRAS names {extra!r}, pyproject.toml has {sorted(known)}"
    assert "dev" not in extras, "the dev extra pulls the test tool chain into the image"
    assert any("EXTRAS" in rest and "uv sync --locked" in rest for rest in build.all("RUN")), (
        "EXTRAS is not used, or not installed from uv.lock"
    )


def test_entrypoint_is_the_console_script(final: Stage, pyproject: dict[str, Any]) -> None:
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    assert entrypoint == ["replicator"]
    assert entrypoint[0] in pyproject["project"]["scripts"]


def test_cmd_runs_the_daemon_on_the_exposed_port(final: Stage) -> None:
    args = build_parser().parse_args(exec_form(final.last("CMD")))
    assert args.command == "run"
    host, _, port = args.listen.rpartition(":")
    assert host == "0.0.0.0", "inside a container the daemon must listen on every interface"
    assert int(port) == exposed_port(final)


def healthcheck_code(final: Stage) -> str:
    rest = final.last("HEALTHCHECK")
    _options, sep, command = rest.partition("CMD ")
    assert sep, f"HEALTHCHECK {rest!r}: expected CMD"
    argv = exec_form(command.strip())
    assert argv[:2] in (["python", "-c"], ["python3", "-c"]), f"HEALTHCHECK runs {argv}: python -c, no curl"
    return argv[2]


def run_healthcheck(code: str, monkeypatch: pytest.MonkeyPatch, answer: Exception | None) -> tuple[int, str]:
    """Runs the HEALTHCHECK's Python with urlopen replaced: its exit code and the URL it asked."""
    asked: list[str] = []

    class Answer:
        status = 200

        def read(self) -> bytes:
            return b"ok\n"

    def urlopen(url: Any, *args: Any, **kwargs: Any) -> Answer:
        asked.append(url if isinstance(url, str) else url.full_url)
        if answer is not None:
            raise answer
        return Answer()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    try:
        exec(compile(code, "<HEALTHCHECK>", "exec"), {"__name__": "__main__"})
        code_ = 0
    except SystemExit as e:
        code_ = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:
        code_ = 1  # an uncaught exception ends `python -c` with 1
    assert len(asked) == 1, f"the HEALTHCHECK made {len(asked)} requests"
    return code_, asked[0]


def test_healthcheck_asks_healthz_on_the_exposed_port(
    final: Stage, get_routes: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exit_code, url = run_healthcheck(healthcheck_code(final), monkeypatch, None)
    assert exit_code == 0
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost")
    assert parts.port == exposed_port(final)
    assert parts.path == "/healthz"
    assert parts.path in get_routes


def test_healthcheck_fails_when_healthz_does(final: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    code = healthcheck_code(final)
    stalled = urllib.error.HTTPError("http://127.0.0.1/healthz", 503, "stalled", None, None)  # type: ignore[arg-type]
    assert run_healthcheck(code, monkeypatch, stalled)[0] != 0
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    assert run_healthcheck(code, monkeypatch, refused)[0] != 0


def test_image_config_path_and_data_dir(final: Stage) -> None:
    env = final.env()
    assert PurePosixPath(env["REPLICATOR_CONFIG"]) == PurePosixPath("/etc/replicator/replicator.yaml")
    assert any("/var/lib/replicator" in rest and "10001" in rest for rest in final.all("RUN")), (
        "create /var/lib/replicator owned by the image's user"
    )
    assert str(image_uid(final)) == "10001"
    # Variables named REPLICATOR_<PATH> override config keys: the image sets none but the config path.
    assert [k for k in env if k.startswith("REPLICATOR_")] == ["REPLICATOR_CONFIG"]


# --- .dockerignore ----------------------------------------------------------------------------------


def _pattern(p: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        elif p[i] == "[":
            end = p.index("]", i)
            out, i = out + p[i : end + 1], end + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out)


def dockerignored(rules: list[str], path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = _pattern(rule.lstrip("!").strip("/"))
        if any(pattern.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_sends_the_sources_and_nothing_else(stages: list[Stage]) -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources: list[str] = []
    for rest in stages[0].all("COPY"):
        words = [w for w in rest.split() if not w.startswith("--")]
        sources += words[:-1]
    assert {"pyproject.toml", "README.md"} <= set(sources)
    needed = []
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            needed += [
                f.relative_to(ROOT).as_posix()
                for f in path.rglob("*")
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
            ]
        else:
            needed.append(source)
    assert any(n.endswith(".mako") for n in needed), "state's migrations template must reach the build"
    for n in needed:
        assert not dockerignored(rules, n), f".dockerignore keeps {n} out of the build context"
    unwanted = (
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/README.md",
        "tests/unit/test_deploy.py",
        "replicator/__pycache__/cli.cpython-311.pyc",
        "replicator.db",
    )
    for unwanted_path in unwanted:
        assert dockerignored(rules, unwanted_path), (
            f".dockerignore lets {unwanted_path} into the build context"
        )


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
