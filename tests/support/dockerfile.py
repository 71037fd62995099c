"""The Dockerfile read as its instructions, per stage, for the tests of the image and of the
Kubernetes manifests that run it (tests/unit/test_image.py, tests/unit/test_deploy.py)."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


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


def read_stages(path: Path = DOCKERFILE) -> list[Stage]:
    return parse_dockerfile(path.read_text())
