"""End-to-end fixtures: a config and inventory on disk, a real moto server, the CLI run in-process."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from replicator.cli import main
from state import Store
from tests.integration.conftest import moto, moto_server  # noqa: F401 - fixtures shared with integration
from tests.support.moto_aws import MotoAws

PLATFORM = "aws.eu-central-1"
ACCOUNTS = {"ledger": "111111111111", "payroll": "222222222222"}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Project:
    """A replicator.yaml plus an inventory folder in a temporary directory, against moto."""

    root: Path
    aws: MotoAws
    capsys: pytest.CaptureFixture[str]
    ps: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    pattern: str = "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"
    platform_extra: dict[str, Any] = field(default_factory=dict)
    replication: dict[str, Any] = field(default_factory=dict)
    extra_platforms: list[dict[str, Any]] = field(default_factory=list)
    extra_zones: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "replicator.yaml"

    def write_config(self) -> None:
        config = {
            "state": "sqlite:///state.db",
            "inventory": ["inventory"],
            "replication": self.replication,
            "platforms": [
                {
                    "identifier": PLATFORM,
                    "type": "aws",
                    "euidPattern": "%s@example.com",
                    "userGroupNamePattern": self.pattern,
                    "aws": self.aws.driver_options(pollInterval=0.01, maxAttempts=1),
                    **self.platform_extra,
                },
                *self.extra_platforms,
            ],
            "landingZones": [
                {
                    "identifier": "aws-default",
                    "platform": PLATFORM,
                    "roleMappings": {
                        "admin": {"platformGroupAlias": "admin", "platformRoles": [self.ps["admin"]]},
                        "user": {"platformGroupAlias": "user", "platformRoles": [self.ps["user"]]},
                        "reader": {"platformGroupAlias": "reader", "platformRoles": [self.ps["reader"]]},
                    },
                },
                *self.extra_zones,
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_inventory(self, docs: list[dict[str, Any]], name: str = "org.yaml") -> None:
        inv = self.root / "inventory"
        inv.mkdir(exist_ok=True)
        (inv / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))

    def cli(self, *args: str) -> Result:
        self.capsys.readouterr()
        code = main(["-c", str(self.config_path), "--log-format", "json", *args])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def store(self) -> Store:
        return Store(f"sqlite:///{self.root / 'state.db'}")

    def group(self, name: str) -> str:
        return self.aws.groups()[name]

    def member_names(self, group_name: str) -> list[str]:
        by_id = {v: k for k, v in self.users.items()}
        return sorted(by_id[u] for u in self.aws.members(self.group(group_name)))


def user(name: str, euid: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"username": name, "email": f"{name}@example.com"}
    if euid is not None:
        spec["euid"] = euid
    return {"apiVersion": "v1", "kind": "meshUser", "metadata": {"name": name}, "spec": spec}


def workspace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "meshWorkspace", "metadata": {"name": name}, "spec": {}}


def project(ws: str, name: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "meshProject",
        "metadata": {"name": name, "ownedByWorkspace": ws},
        "spec": {"tags": tags or {}},
    }


def tenant(
    ws: str,
    prj: str,
    local_id: str,
    platform: str = PLATFORM,
    zone: str = "aws-default",
    deleted: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"localId": local_id, "landingZoneIdentifier": zone}
    if deleted:
        spec["deleted"] = True
    return {
        "apiVersion": "v1",
        "kind": "meshTenant",
        "metadata": {"ownedByWorkspace": ws, "ownedByProject": prj, "platformIdentifier": platform},
        "spec": spec,
    }


def binding(
    ws: str, prj: str, role: str, *users: str, groups: tuple[str, ...] = (), expires: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "role": role,
        "subjects": [{"user": u} for u in users] + [{"group": g} for g in groups],
    }
    if expires:
        spec["expiresAt"] = expires
    return {
        "apiVersion": "v1",
        "kind": "meshProjectBinding",
        "metadata": {"ownedByWorkspace": ws, "ownedByProject": prj},
        "spec": spec,
    }


def standard_inventory(**bindings_by_role: tuple[str, ...]) -> list[dict[str, Any]]:
    """finance/ledger on AWS with users alice..erin (euid = name) and the given ledger bindings."""
    docs = [user(n, n) for n in ("alice", "bob", "carol", "dave", "erin")]
    docs += [
        workspace("finance"),
        project("finance", "ledger"),
        tenant("finance", "ledger", ACCOUNTS["ledger"]),
    ]
    roles = bindings_by_role or {"admin": ("alice",), "user": ("bob", "carol"), "reader": ("dave",)}
    docs += [binding("finance", "ledger", role, *users) for role, users in roles.items() if users]
    return docs


@pytest.fixture
def proj(tmp_path: Path, moto: MotoAws, capsys: pytest.CaptureFixture[str]) -> Project:  # noqa: F811
    p = Project(tmp_path, moto, capsys)
    p.ps = {role: moto.create_permission_set(role) for role in ("admin", "user", "reader")}
    p.users = {n: moto.create_user(f"{n}@example.com") for n in ("alice", "bob", "carol", "dave", "erin")}
    p.write_config()
    p.write_inventory(standard_inventory())
    return p
