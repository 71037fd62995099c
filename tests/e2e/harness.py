"""The end-to-end project harness, one for every platform.

``E2EProject`` is a replicator.yaml plus an inventory folder in a temporary directory, with the CLI
run in-process (``replicator.cli.main``). It writes the config from a platform block (its
``driver_options``, ``driver_extra`` and ``platform_extra``), one landing zone (its role mappings),
the replication settings and the group name pattern, plus any extra platforms and zones. A platform
subclasses it (AWS in conftest.py, the others in their test_reconcile_*.py) and supplies only what
differs: its identifier, type and landing zone, its default role mappings, its ``driver_options``
and the readers of its backend (members, roles, groups), which read the platform's own state and
never go through the driver.

The inventory documents (``user``, ``workspace``, ``project``, ``tenant``, ``binding``) and the
organisation the tests share (``org``: the people, one workspace, its tenants and their bindings)
are built here too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
import yaml

from platforms.contract import Driver
from replicator.cli import main
from replicator.core.config import PlatformConfig
from replicator.engine.runner import Engine, default_driver
from replicator.inputs.loader import load
from replicator.inputs.validate import validate
from state import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PATTERN = "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"
PEOPLE = ("alice", "bob", "carol", "dave", "erin")
# role -> the users bound to it in a project
Bindings = Mapping[str, tuple[str, ...]]
STANDARD: Bindings = {"admin": ("alice",), "user": ("bob", "carol"), "reader": ("dave",)}
DASHED = "#{workspaceIdentifier}-#{projectIdentifier}-#{platformGroupAlias}"
"""The group name pattern ``rename_dashed`` changes to."""

DriverT = TypeVar("DriverT", bound=Driver)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str], config_path: Path, *args: str) -> Result:
    """``replicator -c config_path --log-format json args...`` in-process, with what it printed."""
    capsys.readouterr()
    code = main(["-c", str(config_path), "--log-format", "json", *args])
    out, err = capsys.readouterr()
    return Result(code, out, err)


@dataclass
class Example:
    """examples/<name> copied to a temporary directory with its replicator.yaml loaded (``config``),
    for a test to point it at a local server and ``save`` it; ``cli`` runs the CLI on it."""

    root: Path
    capsys: pytest.CaptureFixture[str]
    config: dict[str, Any]

    @classmethod
    def copy(cls, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Example:
        root = tmp_path / name
        shutil.copytree(EXAMPLES / name, root)
        return cls(root, capsys, yaml.safe_load((root / "replicator.yaml").read_text()))

    @property
    def config_path(self) -> Path:
        return self.root / "replicator.yaml"

    def save(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def cli(self, *args: str) -> Result:
        return run_cli(self.capsys, self.config_path, *args)


# --- inventory documents ---------------------------------------------------------------------


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
    ws: str, prj: str, local_id: str, platform: str, zone: str, deleted: bool = False
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


def org(
    platform: str,
    zone: str,
    local_ids: Mapping[str, str],
    bindings: Mapping[str, Bindings],
    ws: str = "finance",
) -> list[dict[str, Any]]:
    """The people (euid = name), workspace ``ws``, a project and tenant per entry of ``local_ids``
    (project -> the tenant's localId), then each project's bindings (role -> users; a role bound
    to nobody has no binding)."""
    docs = [user(n, n) for n in PEOPLE]
    docs.append(workspace(ws))
    for prj, local_id in local_ids.items():
        docs += [project(ws, prj), tenant(ws, prj, local_id, platform, zone)]
    for prj, roles in bindings.items():
        docs += [binding(ws, prj, role, *users) for role, users in roles.items() if users]
    return docs


# --- the project -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformSpec:
    """What a platform's project starts from: its identifier and type, its landing zone with the
    default role mappings (role -> platform roles; each role's group alias is the role), the
    replication settings, and the tenants' localIds when they are known before the backend is."""

    identifier: str
    type: str
    zone: str
    mappings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    replication: Mapping[str, Any] = field(default_factory=lambda: {"maxDeletions": 100})
    local_ids: Mapping[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class E2EProject:
    """A replicator.yaml plus an inventory folder in ``root``, against one platform's backend. A
    subclass names its ``spec``; the fields below start from it and a test may change them."""

    spec: ClassVar[PlatformSpec]
    root: Path
    capsys: pytest.CaptureFixture[str]
    platform: str = field(init=False)  # the platform's identifier
    type: str = field(init=False)
    zone: str = field(init=False)  # the landing zone's identifier
    mappings: dict[str, list[str]] = field(init=False)  # role -> platform roles
    replication: dict[str, Any] = field(init=False)
    local_ids: dict[str, str] = field(init=False)  # project -> its tenant's localId
    pattern: str = PATTERN
    platform_extra: dict[str, Any] = field(default_factory=dict)  # more keys of the platform entry
    driver_extra: dict[str, Any] = field(default_factory=dict)  # more keys of its driver block
    extra_platforms: list[dict[str, Any]] = field(default_factory=list)
    extra_zones: list[dict[str, Any]] = field(default_factory=list)
    schedule: dict[str, Any] = field(default_factory=dict)  # the config's schedule block, when set
    ws: str = "finance"
    users: dict[str, str] = field(default_factory=dict)  # name -> the backend's user id, where kept

    def __post_init__(self) -> None:
        spec = self.spec
        self.platform, self.type, self.zone = spec.identifier, spec.type, spec.zone
        self.mappings = {role: list(roles) for role, roles in spec.mappings.items()}
        self.replication = dict(spec.replication)
        self.local_ids = dict(spec.local_ids)

    # --- what a platform supplies ---

    def driver_options(self) -> dict[str, Any]:
        """The driver block (the platform entry's ``<type>:`` key), ``driver_extra`` included."""
        raise NotImplementedError

    def role_mappings(self) -> dict[str, list[str]]:
        """role -> platform roles of the landing zone; each role's group alias is the role."""
        return self.mappings

    # --- config and inventory on disk ---

    @property
    def config_path(self) -> Path:
        return self.root / "replicator.yaml"

    def platform_config(self) -> dict[str, Any]:
        return {
            "identifier": self.platform,
            "type": self.type,
            "euidPattern": "%s@example.com",
            "userGroupNamePattern": self.pattern,
            self.type: self.driver_options(),
            **self.platform_extra,
        }

    def landing_zone(self) -> dict[str, Any]:
        return {
            "identifier": self.zone,
            "platform": self.platform,
            "roleMappings": {
                role: {"platformGroupAlias": role, "platformRoles": roles}
                for role, roles in self.role_mappings().items()
            },
        }

    def write_config(self) -> None:
        config = {
            "state": "sqlite:///state.db",
            "inventory": ["inventory"],
            "replication": self.replication,
            "platforms": [self.platform_config(), *self.extra_platforms],
            "landingZones": [self.landing_zone(), *self.extra_zones],
        }
        if self.schedule:
            config["schedule"] = self.schedule
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def write_inventory(self, docs: list[dict[str, Any]], name: str = "org.yaml") -> None:
        inv = self.root / "inventory"
        inv.mkdir(exist_ok=True)
        (inv / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))

    def tenants(self, **bindings_by_project: Bindings) -> list[dict[str, Any]]:
        """``org`` on this platform: a tenant for each project named, with its bindings."""
        local_ids = {prj: self.local_ids[prj] for prj in bindings_by_project}
        return org(self.platform, self.zone, local_ids, bindings_by_project, self.ws)

    def inventory(
        self, bindings: Bindings | None = None, extra: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        """ledger and payroll; ledger has ``bindings`` (default ``STANDARD``), payroll erin as admin."""
        docs = self.tenants(ledger=STANDARD if bindings is None else bindings, payroll={"admin": ("erin",)})
        return [*docs, *(extra or [])]

    # --- running the CLI ---

    def cli(self, *args: str) -> Result:
        return run_cli(self.capsys, self.config_path, *args)

    def converge(self, *args: str) -> Result:
        r = self.cli("reconcile", "--all", *args)
        assert r.code == 0, r.out + r.err
        return r

    def plan_exit(self, code: int) -> Result:
        """``plan --detailed-exitcode``, which must exit with ``code`` (0: nothing to do, 2: changes)."""
        r = self.cli("plan", "--detailed-exitcode")
        assert r.code == code, r.out + r.err
        return r

    def assert_converged(self) -> None:
        """A plan now finds nothing to do."""
        assert "Plan: 0 to add, 0 to remove, 0 warnings." in self.plan_exit(0).out

    def replan(self, **roles: tuple[str, ...]) -> Result:
        """Converge, then write the inventory with ledger's ``STANDARD`` bindings but ``roles`` (role ->
        users) instead: the plan that follows."""
        self.converge()
        self.write_inventory(self.inventory({**STANDARD, **roles}))
        return self.cli("plan")

    def rename_dashed(self) -> list[str]:
        """The group name pattern becomes ``DASHED`` (in the config on disk); the names, sorted, that
        the groups of ``inventory()`` get from it."""
        self.pattern = DASHED
        self.write_config()
        return sorted(f"{self.ws}-{p}-{a}" for p in ("ledger", "payroll") for a in STANDARD)

    def store(self) -> Store:
        return Store(f"sqlite:///{self.root / 'state.db'}")


def no_op_driver(proj: E2EProject, driver_type: type[DriverT], tenants: int = 2) -> DriverT:
    """One engine run of every tenant with apply on (the caller converged first). Asserts that it
    applied nothing to any of the ``tenants`` tenants and failed none; returns the one driver the
    run made, to read its ``api_calls``."""
    drivers: list[DriverT] = []

    def capture(platform: PlatformConfig) -> Driver:
        driver = default_driver(platform)
        assert isinstance(driver, driver_type)
        drivers.append(driver)
        return driver

    engine = Engine(validate(load(proj.config_path)), proj.store(), make_driver=capture)
    now = datetime.now(UTC)
    report = asyncio.run(engine.run(engine.select(now), apply=True, now=now))
    assert [r.applied for r in report.results] == [0] * tenants
    assert report.failed == []
    (driver,) = drivers
    return driver
