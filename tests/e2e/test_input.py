"""Bad input: every problem at once, located by file, line, object and field; exit 1; never a
traceback; nothing written anywhere. No platform is contacted by these tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from replicator.cli import main
from state import Store

ROOT = Path(__file__).resolve().parents[2]

PS = "arn:aws:sso:::permissionSet/ssoins-1/ps-admin"
AWS_BLOCK = {
    "region": "eu-central-1",
    "identityStoreId": "d-1234567890",
    "instanceArn": "arn:aws:sso:::instance/ssoins-1",
    "endpointUrl": "http://127.0.0.1:9",
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def good_config(**platform: Any) -> dict[str, Any]:
    return {
        "state": "sqlite:///state.db",
        "inventory": ["org.yaml"],
        "platforms": [{"identifier": "aws.eu-central-1", "type": "aws", "aws": AWS_BLOCK, **platform}],
        "landingZones": [
            {
                "identifier": "lz",
                "platform": "aws.eu-central-1",
                "roleMappings": {"admin": {"platformGroupAlias": "admin", "platformRoles": [PS]}},
            }
        ],
    }


GOOD_INVENTORY = """\
apiVersion: v1
kind: meshUser
metadata: {name: u1}
spec: {euid: jdoe}
---
apiVersion: v1
kind: meshWorkspace
metadata: {name: ws}
---
apiVersion: v1
kind: meshProject
metadata: {name: p1, ownedByWorkspace: ws}
spec: {tags: {costCenter: 4711}}
---
apiVersion: v1
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p1}
spec: {role: admin, subjects: [{user: u1}]}
---
apiVersion: v1
kind: meshTenant
metadata: {ownedByWorkspace: ws, ownedByProject: p1, platformIdentifier: aws.eu-central-1}
spec: {localId: "123456789012", landingZoneIdentifier: lz}
"""


def inventory_with(site: Path, documents: str) -> Path:
    """The inventory next to ``site`` (org.yaml): GOOD_INVENTORY, then ``documents``."""
    return write(site.parent / "org.yaml", GOOD_INVENTORY + documents)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "replicator.yaml", yaml.safe_dump(good_config()))
    write(tmp_path / "org.yaml", GOOD_INVENTORY)
    return tmp_path / "replicator.yaml"


def test_valid_input(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "-c", str(site))
    assert code == 0
    assert (
        "valid: 1 platforms, 1 landing zones, 1 users, 0 user groups, 1 projects, 1 bindings, 1 tenants"
        in out
    )
    assert not (site.parent / "state.db").exists(), "validate must not open the store"


def test_config_from_environment_variable(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_CONFIG", str(site))
    code, _, _ = run(capsys, "validate")
    assert code == 0


def test_every_inventory_problem_at_once(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    org = inventory_with(
        site,
        """\
---
apiVersion: v1
kind: meshUser
metadata: {name: u1}
spec: {euid: other}
---
apiVersion: v1
kind: meshUser
metadata: {name: u2}
spec: {euid: JDOE}
---
apiVersion: v1
kind: meshUserGroup
metadata: {name: g1}
spec: {members: [u1, ghost]}
---
apiVersion: v1
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p1}
spec:
  role: admin
  subjects: [{user: nobody}, {group: nogroup}]
---
apiVersion: v1
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p9}
spec: {role: admin, subjects: [{user: u1}], expiresAt: "2026-01-01T00:00:00"}
---
apiVersion: v1
kind: meshTenant
metadata: {ownedByWorkspace: ws, ownedByProject: p1, platformIdentifier: gcp.nowhere}
spec: {localId: x, landingZoneIdentifier: nolz}
---
apiVersion: v1
kind: meshProject
metadata: {name: p2, ownedByWorkspace: ghostws}
---
apiVersion: v1
kind: meshThing
metadata: {name: x}
---
apiVersion: v1
kind: meshUser
metadata: {name: u3}
spec: {euid: x, shoeSize: 44}
""",
    )
    code, out, err = run(capsys, "validate", "-c", str(site))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    expected = [
        f"{org}:27: meshUser u1: metadata: duplicate meshUser: already defined at {org}:1",
        f"{org}:33: meshUser u2: spec.euid: euid 'JDOE' is also the euid of meshUser u1: "
        "euids must be unique",
        f"{org}:38: meshUserGroup g1: spec.members[1]: unknown meshUser 'ghost'",
        f"{org}:45: meshProjectBinding ws/p1: spec.subjects[0].user: unknown meshUser 'nobody'",
        f"{org}:45: meshProjectBinding ws/p1: spec.subjects[1].group: unknown meshUserGroup 'nogroup'",
        f"{org}:50: meshProjectBinding ws/p9: spec.expiresAt: Input should have timezone info",
        f"{org}:54: meshTenant ws/p1/gcp.nowhere: metadata.platformIdentifier: "
        "unknown platform 'gcp.nowhere'",
        f"{org}:55: meshTenant ws/p1/gcp.nowhere: spec.landingZoneIdentifier: unknown landing zone 'nolz'",
        f"{org}:59: meshProject ghostws/p2: metadata.ownedByWorkspace: unknown meshWorkspace 'ghostws'",
        f"{org}:62: meshThing x: kind: unknown kind 'meshThing'",
        f"{org}:68: meshUser u3: spec.shoeSize: unknown field",
    ]
    for line in expected:
        assert any(e.startswith(f"error: {line}") for e in lines), f"missing: {line}\n{err}"
    assert lines[-1] == f"{len(lines) - 1} problem(s) found."
    assert "Traceback" not in err


def test_every_config_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = good_config(
        euidPattern="%s-%s",
        userGroupNamePattern="#{workspaceIdentifier}.#{nope}",
        azure={"tenantId": "x"},
    )
    cfg["platforms"].append({"identifier": "gcp.eu", "type": "gcp", "gcp": {}})
    cfg["platforms"].append({"identifier": "aws.two", "type": "aws", "aws": {"region": "x", "bogus": 1}})
    cfg["landingZones"].append({"identifier": "lz", "platform": "aws.nowhere"})
    cfg["landingZones"].append(
        {
            "identifier": "lz2",
            "platform": "aws.eu-central-1",
            "roleMappings": {"reader": {"platformGroupAlias": "reader", "platformRoles": [PS, "ReadOnly"]}},
        }
    )
    cfg["replication"] = {"maxDeletions": "150%"}
    path = write(tmp_path / "replicator.yaml", yaml.safe_dump(cfg, sort_keys=False))
    write(tmp_path / "org.yaml", "")
    code, _, err = run(capsys, "validate", "-c", str(path))
    # Pydantic refuses the replication block before the cross-checks run: fix, then the rest shows.
    assert code == 1
    assert "replication.maxDeletions" in err
    assert "between 0% and 100%" in err

    del cfg["replication"]
    write(path, yaml.safe_dump(cfg, sort_keys=False))
    code, _, err = run(capsys, "validate", "-c", str(path))
    assert code == 1
    for needle in (
        "platform aws.eu-central-1: euidPattern: euidPattern '%s-%s': needs exactly one %s or %S, found 2",
        "platform aws.eu-central-1: userGroupNamePattern: '#{workspaceIdentifier}.#{nope}': unknown "
        "placeholder #{nope}",
        "must contain #{platformGroupAlias}",
        "platform aws.eu-central-1: azure: a aws platform takes an 'aws' block, not 'azure'",
        "platform gcp.eu: gcp.customerId: required field is missing",
        "platform aws.two: aws.bogus: unknown field",
        "platform aws.two: aws.identityStoreId: required field is missing",
        "landing zone lz: identifier: duplicate landing zone identifier",
        "landing zone lz: platform: unknown platform 'aws.nowhere'",
        "landing zone lz2: roleMappings.reader.platformRoles[1]: 'ReadOnly' is not a role id this platform "
        "accepts (like arn:aws:sso:::permissionSet/",
    ):
        assert needle in err, f"missing {needle!r} in\n{err}"
    assert all(line.startswith(f"error: {path}:") for line in err.splitlines()[:-1])


def test_group_name_problems_are_found_per_tenant(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(site, yaml.safe_dump(good_config(userGroupNamePattern="#{tagOwner}-#{platformGroupAlias}")))
    code, _, err = run(capsys, "validate", "-c", str(site))
    assert code == 1
    assert (
        "#{tagOwner}: no tag 'owner' on the project, the tenant, its landing zone or the workspace" in err
    )

    write(site, yaml.safe_dump(good_config(userGroupNamePattern="team-#{platformGroupAlias}")))
    inventory_with(
        site,
        """\
---
apiVersion: v1
kind: meshProject
metadata: {name: p2, ownedByWorkspace: ws}
---
apiVersion: v1
kind: meshTenant
metadata: {ownedByWorkspace: ws, ownedByProject: p2, platformIdentifier: aws.eu-central-1}
spec: {localId: "210987654321", landingZoneIdentifier: lz}
""",
    )
    code, _, err = run(capsys, "validate", "-c", str(site))
    assert code == 1
    assert "group name 'mst-team-admin' is also rendered for tenant ws/p1/aws.eu-central-1" in err


def test_broken_yaml_is_located(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    org = site.parent / "org.yaml"
    write(org, "apiVersion: v1\nkind: meshUser\nmetadata: {name: u1\nspec: {}\n")
    for command in ("validate", "plan", "reconcile --all", "status"):
        code, _out, err = run(capsys, *command.split(), "-c", str(site))
        if command == "status":
            assert code == 0, "status needs only the config, not a valid inventory"
            continue
        assert code == 1, command
        assert f"error: {org}:" in err
        assert "invalid YAML" in err
        assert "Traceback" not in err
    assert not (site.parent / "state.db").exists() or command == "status"


def test_broken_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "replicator.yaml", "platforms: [\n")
    code, _, err = run(capsys, "plan", "-c", str(path))
    assert code == 1
    assert f"error: {path}:" in err
    assert "invalid YAML" in err

    write(path, "- just\n- a list\n")
    code, _, err = run(capsys, "validate", "-c", str(path))
    assert code == 1
    assert "the config file must be one YAML mapping" in err

    code, _, err = run(capsys, "validate", "-c", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert "config file does not exist" in err


def test_missing_inventory_path(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = good_config()
    cfg["inventory"] = ["org.yaml", "nothing-here/"]
    write(site, yaml.safe_dump(cfg))
    code, _, err = run(capsys, "validate", "-c", str(site))
    assert code == 1
    assert "nothing-here: inventory file or folder does not exist" in err


def test_usage_errors_exit_1_not_2(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--no-such-flag", "-c", str(site))
    assert code == 1
    assert "unrecognized arguments" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 1
    assert "invalid choice: 'frobnicate'" in err
    code, out, _ = run(capsys, "plan", "--help")
    assert code == 0
    assert "--detailed-exitcode" in out
    code, _, err = run(capsys, "reconcile", "-c", str(site))
    assert code == 1
    assert "--tenant" in err
    code, _, err = run(capsys, "reconcile", "--all", "--tenant", "a/b/c", "-c", str(site))
    assert code == 1


def test_unknown_platform_filter(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--platform", "aws.mars", "-c", str(site))
    assert code == 1
    assert "unknown platform 'aws.mars'" in err


def test_unreachable_store_is_a_clear_error(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = good_config()
    cfg["state"] = "postgresql://nobody@127.0.0.1:1/none"
    write(site, yaml.safe_dump(cfg))
    code, _, err = run(capsys, "status", "-c", str(site))
    assert code == 1
    assert "state store" in err
    assert "Traceback" not in err


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    doc = json.loads(out)
    config = doc["config"]
    assert set(config["properties"]) >= {"state", "inventory", "platforms", "landingZones", "replication"}
    platform = config["$defs"]["PlatformConfig"]
    assert platform["properties"]["aws"] == {"$ref": "#/$defs/AwsOptions"}
    assert "identityStoreId" in config["$defs"]["AwsOptions"]["properties"]
    assert platform["properties"]["euidPattern"]["description"].startswith("How a user's euid")
    kinds = {
        d["properties"]["kind"]["const"]
        for d in doc["inventory"]["$defs"].values()
        if "kind" in d["properties"]
    }
    assert kinds == {
        "meshUser",
        "meshUserGroup",
        "meshWorkspace",
        "meshProject",
        "meshProjectBinding",
        "meshTenant",
    }


def test_help_is_fast_because_sdks_load_lazily() -> None:
    """The CLI module and --help import neither boto3 nor SQLAlchemy nor pydantic (timed in `make bench`)."""
    code = (
        "import sys\n"
        "from replicator.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'sqlalchemy', 'alembic', 'pydantic')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert "usage: replicator" in out
    assert out.strip().endswith("HEAVY []")


def test_entry_point_runs(site: Path) -> None:
    exe = Path(sys.executable).parent / "replicator"
    proc = subprocess.run(
        [str(exe), "validate", "-c", str(site)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("valid:")


def test_hidden_entries_of_an_inventory_folder_are_skipped(tmp_path: Path) -> None:
    """A ConfigMap volume: the files, plus the kubelet's `..<timestamp>/` copy and `..data` link."""
    from replicator.inputs.loader import inventory_files

    inv = tmp_path / "inventory"
    (inv / "..2026_11_23_12_00_00.1").mkdir(parents=True)
    (inv / "..2026_11_23_12_00_00.1" / "org.yaml").write_text("kind: meshUser\n")
    (inv / "..data").symlink_to("..2026_11_23_12_00_00.1")
    (inv / "org.yaml").symlink_to("..data/org.yaml")
    (inv / ".hidden.yaml").write_text("x: 1\n")
    files, problems = inventory_files(tmp_path, ["inventory"])
    assert problems == []
    assert files == [inv / "org.yaml"]


def test_environment_overrides_config_keys(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from replicator.inputs.environment import apply_env_overrides
    from replicator.inputs.loader import load

    env = {
        "REPLICATOR_REPLICATION__MAX_DELETIONS": "10",
        "REPLICATOR_SCHEDULE__INTERVAL": "5m",
        "REPLICATOR_CONFIG": "ignored.yaml",
        "OTHER": "x",
        # what Kubernetes injects for Services named replicator / replicator-metrics
        "REPLICATOR_SERVICE_HOST": "10.0.0.1",
        "REPLICATOR_SERVICE_PORT": "8080",
        "REPLICATOR_SERVICE_PORT_HTTP": "8080",
        "REPLICATOR_PORT": "tcp://10.0.0.1:8080",
        "REPLICATOR_PORT_8080_TCP": "tcp://10.0.0.1:8080",
        "REPLICATOR_PORT_8080_TCP_ADDR": "10.0.0.1",
        "REPLICATOR_METRICS_SERVICE_HOST": "10.0.0.2",
    }
    assert apply_env_overrides({"replication": {"aadUserLookupStrategy": "x"}}, env) == {
        "replication": {"aadUserLookupStrategy": "x", "maxDeletions": 10},
        "schedule": {"interval": "5m"},
    }
    other_db = site.parent / "elsewhere" / "other.db"
    monkeypatch.setenv("REPLICATOR_STATE", f"sqlite:///{other_db}")
    monkeypatch.setenv("REPLICATOR_REPLICATION__MAX_DELETIONS", "7")
    config = load(site).config
    assert config.replication.max_deletions == 7
    # A store whose folder does not exist is not created: a typo would start an empty store.
    code, _, err = run(capsys, "status", "-c", str(site))
    assert code == 1
    assert f"the state store's folder {other_db.parent} does not exist" in err
    assert not other_db.parent.exists()
    other_db.parent.mkdir()
    code, out, err = run(capsys, "status", "-c", str(site))
    assert code == 0
    assert out == "no runs recorded yet\n"
    assert "created a new, empty state store" in err
    assert other_db.exists()
    with Store(f"sqlite:///{other_db}") as store:  # an identity source's sync shows in status
        store.start_sync("ldap:corp")
        store.finish_sync("ldap:corp", "failed", error="cannot reach ldap://ldap.example.com")
    code, out, _ = run(capsys, "status", "-c", str(site))
    assert out.splitlines()[1] == "  error: cannot reach ldap://ldap.example.com"
    assert out.startswith("identity source ldap:corp  failed  ")
    code, out, _ = run(capsys, "status", "-c", str(site), "-o", "json")
    (source,) = json.loads(out)["sources"]
    assert (source["source"], source["outcome"], source["lastCompleteAt"]) == ("ldap:corp", "failed", None)
    assert not (site.parent / "state.db").exists()

    monkeypatch.setenv("REPLICATOR_REPLICATION__MAX_DELETIONS", "lots")
    code, _, err = run(capsys, "validate", "-c", str(site))
    assert code == 1
    assert "replication.maxDeletions" in err


# --- every problem at once, each where it is -----------------------------------------------------

BINDINGS_TWICE = """\
kind: meshUser
metadata: {name: a}
spec: {euid: a, email: a@example.com}
---
kind: meshWorkspace
metadata: {name: ws}
---
kind: meshProject
metadata: {name: p, ownedByWorkspace: ws}
---
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p, name: b1}
spec: {role: admin, subjects: [{user: a}]}
---
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p, name: b1}
spec: {role: admin, subjects: [{user: a}]}
---
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p}
spec: {role: admin, subjects: [{user: a}]}
---
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p}
spec: {role: admin, subjects: [{user: a}]}
---
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p}
spec: {role: reader, subjects: [{user: a}]}
"""


def test_a_key_given_twice_is_a_located_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(
        tmp_path / "replicator.yaml", yaml.safe_dump(good_config()) + "state: sqlite:///other.db\n"
    )
    write(tmp_path / "org.yaml", "kind: meshUser\nmetadata: {name: a}\nspec: {euid: a, euid: b}\n")
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    assert f"error: {config}:" in err
    assert "duplicate key 'state' (first at line" in err
    write(config, yaml.safe_dump(good_config()))
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    assert f"error: {tmp_path / 'org.yaml'}:3: invalid YAML: duplicate key 'euid' (first at line 3)" in err


def test_a_binding_given_twice_is_a_located_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "replicator.yaml", yaml.safe_dump(good_config()))
    org = write(tmp_path / "org.yaml", BINDINGS_TWICE)
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("error:")]
    assert problems == [
        f"error: {org}:16: meshProjectBinding ws/p/b1: metadata: duplicate meshProjectBinding: "
        f"already defined at {org}:11",
        f"error: {org}:24: meshProjectBinding ws/p: metadata: duplicate meshProjectBinding: "
        f"already defined at {org}:19",
    ], err


def test_an_invalid_config_does_not_hide_the_inventory_s_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = good_config()
    bad["landingZones"][0]["roleMappings"]["admin"]["platformGroupAlias"] = 7
    config = write(tmp_path / "replicator.yaml", yaml.safe_dump(bad))
    write(tmp_path / "org.yaml", "kind: meshUser\nmetadata: {name: a}\nspec: {bogus: 1}\n")
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    assert "platformGroupAlias: Input should be a valid string" in err
    assert f"error: {tmp_path / 'org.yaml'}:3: meshUser a: spec.bogus: unknown field" in err
    assert "2 problem(s) found." in err


def test_a_bad_value_from_the_environment_names_the_variable_not_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "replicator.yaml", yaml.safe_dump({**good_config(), "schedule": {"interval": "5m"}})
    )
    write(tmp_path / "org.yaml", GOOD_INVENTORY)
    monkeypatch.setenv("REPLICATOR_SCHEDULE__INTERVAL", "banana")
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    assert (
        "error: environment variable REPLICATOR_SCHEDULE__INTERVAL: schedule.interval: Value error, " in err
    )
    assert f"{config}:" not in err


def test_the_command_line_s_own_variables_override_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replicator resync` reads REPLICATOR_URL and REPLICATOR_API_KEY: exported in a shell, they
    must not turn into the config keys `url` and `apiKey` for every other command."""
    config = write(tmp_path / "replicator.yaml", yaml.safe_dump(good_config()))
    write(tmp_path / "org.yaml", GOOD_INVENTORY)
    monkeypatch.setenv("REPLICATOR_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("REPLICATOR_API_KEY", "rpk_x")
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert (code, err) == (0, "")
    monkeypatch.setenv("REPLICATOR_UR", "typo")
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    assert "environment variable REPLICATOR_UR: ur: unknown field" in err


def test_messages_a_new_user_meets_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A folder given as the config.
    code, _, err = run(capsys, "-c", str(tmp_path), "validate")
    assert code == 1
    assert f"is a folder: name the config file in it (-c {tmp_path / 'replicator.yaml'})" in err

    # An empty inventory is valid, and says so.
    config = write(tmp_path / "replicator.yaml", yaml.safe_dump({**good_config(), "inventory": []}))
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 0
    assert "warning: the inventory is empty: no users, bindings or tenants were read" in err

    # A file that cannot be read comes first: it is the cause of what follows.
    write(config, yaml.safe_dump({**good_config(), "inventory": ["zz-people.yaml", "missing.yaml"]}))
    write(
        tmp_path / "zz-people.yaml",
        "kind: meshUser\nmetadata: {name: a}\nspec: {euid: a}\n---\n"
        "kind: meshUser\nmetadata: {name: a}\nspec: {euid: a}\n---\n"
        "kind: meshUserGroup\nmetadata: {name: g}\nspec: {members: [nobody]}\n",
    )
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("error:")]
    assert problems[0] == f"error: {tmp_path / 'missing.yaml'}: inventory file or folder does not exist"
    # A user given twice is a duplicate, not the twin of its own euid.
    assert any("duplicate meshUser: already defined at" in p for p in problems)
    assert not any("also the euid of meshUser a" in p for p in problems), problems
    assert len(problems) == 3, problems


def test_a_wrong_group_name_pattern_is_reported_once_not_per_tenant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "replicator.yaml", yaml.safe_dump(good_config(userGroupNamePattern="#{noSuchThing}-x"))
    )
    tenants = "".join(
        f"---\nkind: meshProject\nmetadata: {{name: p{i}, ownedByWorkspace: ws}}\n---\nkind: meshTenant\n"
        f"metadata: {{ownedByWorkspace: ws, ownedByProject: p{i}, platformIdentifier: aws.eu-central-1}}\n"
        f"spec: {{localId: '12345678901{i}', landingZoneIdentifier: lz}}\n"
        for i in range(3)
    )
    write(tmp_path / "org.yaml", "kind: meshWorkspace\nmetadata: {name: ws}\n" + tenants)
    code, _, err = run(capsys, "-c", str(config), "validate")
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(problems) == 1, problems
    assert "noSuchThing" in problems[0]


def test_the_config_is_found_from_a_subfolder_the_way_git_finds_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATOR_CONFIG", raising=False)
    write(tmp_path / "replicator.yaml", yaml.safe_dump({**good_config(), "inventory": ["inventory"]}))
    write(tmp_path / "inventory" / "teams" / "org.yaml", GOOD_INVENTORY)
    monkeypatch.chdir(tmp_path / "inventory" / "teams")
    code, out, err = run(capsys, "validate")
    assert code == 0, err
    assert out.startswith("valid: 1 platforms")
    monkeypatch.chdir(tmp_path.parent)  # above the project: nothing to find
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert "error: replicator.yaml: config file does not exist" in err
