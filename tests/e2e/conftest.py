"""End-to-end fixtures: a config and inventory on disk, a real moto server, the CLI run in-process.

The harness (``E2EProject``, the inventory documents, ``Result``) is in harness.py; ``Project`` is
its AWS platform, used by the AWS tests here and by the fault and scenario tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.harness import STANDARD, Bindings, E2EProject, PlatformSpec, org
from tests.e2e.harness import Result as Result
from tests.e2e.harness import binding as binding
from tests.e2e.harness import project as project
from tests.e2e.harness import user as user
from tests.e2e.harness import workspace as workspace
from tests.integration.conftest import moto  # noqa: F401 - the fixture integration uses too
from tests.support.moto_aws import MotoAws

PLATFORM = "aws.eu-central-1"
ZONE = "aws-default"
ACCOUNTS = {"ledger": "111111111111", "payroll": "222222222222"}
ROLES = ("admin", "user", "reader")
AWS = PlatformSpec(PLATFORM, "aws", ZONE, replication={})


@dataclass(kw_only=True)
class Project(E2EProject):
    """The AWS project, against moto: one permission set per role (``ps``), users by name."""

    spec = AWS
    aws: MotoAws
    ps: dict[str, str] = field(default_factory=dict)  # role -> permission set ARN

    def driver_options(self) -> dict[str, Any]:
        return self.aws.driver_options(**{"pollInterval": 0.01, "maxAttempts": 1, **self.driver_extra})

    def role_mappings(self) -> dict[str, list[str]]:
        return {role: [self.ps[role]] for role in ROLES}

    def group(self, name: str) -> str:
        return self.aws.groups()[name]

    def member_names(self, group_name: str) -> list[str]:
        by_id = {v: k for k, v in self.users.items()}
        return sorted(by_id[u] for u in self.aws.members(self.group(group_name)))


def tenant(
    ws: str,
    prj: str,
    local_id: str,
    platform: str = PLATFORM,
    zone: str = ZONE,
    deleted: bool = False,
) -> dict[str, Any]:
    return harness.tenant(ws, prj, local_id, platform, zone, deleted)


def standard_inventory(**bindings_by_role: tuple[str, ...]) -> list[dict[str, Any]]:
    """finance/ledger on AWS with users alice..erin (euid = name) and the given ledger bindings."""
    roles: Bindings = bindings_by_role or STANDARD
    return org(PLATFORM, ZONE, {"ledger": ACCOUNTS["ledger"]}, {"ledger": roles})


@pytest.fixture
def proj(tmp_path: Path, moto: MotoAws, capsys: pytest.CaptureFixture[str]) -> Project:  # noqa: F811
    p = Project(root=tmp_path, capsys=capsys, aws=moto)
    p.ps = {role: moto.create_permission_set(role) for role in ROLES}
    p.users = {n: moto.create_user(f"{n}@example.com") for n in ("alice", "bob", "carol", "dave", "erin")}
    p.write_config()
    p.write_inventory(standard_inventory())
    return p
