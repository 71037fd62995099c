"""Input fuzzing: hypothesis-generated config and inventory documents (valid, broken and hostile:
huge strings, deep nesting, wrong types, unicode, YAML anchors and aliases, duplicate keys, tabs,
bytes that are not UTF-8) written to a temporary folder and run through ``replicator validate`` and
``replicator plan`` (``replicator.cli.main`` in-process, ``plan`` against a real moto server).

Every run must end with exit 0, or exit 1 where every ``error:`` line is located (``FILE:LINE:``);
never a traceback, never ``unexpected``, never a hang (a SIGALRM per run fails the test).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.cli import main
from replicator.inputs import loader as loader_module
from replicator.inputs import yamlread
from tests.support.moto_aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoAws

RUN_TIMEOUT = 20  # seconds one validate or plan may take before it counts as a hang
LOCATED = re.compile(r"^error: [^\n]+?:\d+: ")
PS = "arn:aws:sso:::permissionSet/ssoins-1/ps-1"


class Hang(BaseException):
    """A run took longer than RUN_TIMEOUT (not an Exception: main()'s last line of defence must not
    catch it)."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- documents --------------------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,11}", fullmatch=True)
unicode_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=0, max_size=40
)


def config(aws: MotoAws) -> dict[str, Any]:
    return {
        "state": "sqlite:///state.db",
        "inventory": ["inventory"],
        "platforms": [
            {
                "identifier": "aws.test",
                "type": "aws",
                "euidPattern": "%s@example.com",
                "aws": aws.driver_options(maxAttempts=1, pollInterval=0.01),
            }
        ],
        "landingZones": [
            {
                "identifier": "lz",
                "platform": "aws.test",
                "roleMappings": {
                    "admin": {"platformGroupAlias": "admin", "platformRoles": [PS]},
                    "reader": {"platformGroupAlias": "reader", "platformRoles": [PS]},
                },
            }
        ],
    }


@st.composite
def inventories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A consistent inventory: users, one workspace, projects, bindings, tenants on aws.test."""
    users = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    projects = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "meshUser",
            "metadata": {"name": u},
            "spec": {"username": u, "email": f"{u}@example.com", "euid": u},
        }
        for u in users
    ]
    docs.append({"apiVersion": "v1", "kind": "meshWorkspace", "metadata": {"name": "ws"}, "spec": {}})
    for i, p in enumerate(projects):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "meshProject",
                "metadata": {"name": p, "ownedByWorkspace": "ws"},
                "spec": {"tags": {}},
            }
        )
        meta = {"ownedByWorkspace": "ws", "ownedByProject": p}
        subjects = [{"user": u} for u in draw(st.lists(st.sampled_from(users), max_size=3, unique=True))]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "meshProjectBinding",
                "metadata": meta,
                "spec": {"role": draw(st.sampled_from(["admin", "reader"])), "subjects": subjects},
            }
        )
        if draw(st.booleans()):
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "meshTenant",
                    "metadata": {**meta, "platformIdentifier": "aws.test"},
                    "spec": {"localId": f"{900000000000 + i}", "landingZoneIdentifier": "lz"},
                }
            )
    return docs


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    unicode_text,
    st.just("x" * 200_000),
    st.builds(nested, st.integers(min_value=1, max_value=60)),
    st.lists(unicode_text, max_size=3),
    st.dictionaries(unicode_text, unicode_text, max_size=3),
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if prefix and prefix[-1] == "endpointUrl":
        return []  # without it (or with another) a valid config would call the real AWS
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with a few values replaced by hostile ones, keys dropped or unknown keys added."""
    import copy

    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        where = draw(st.sampled_from(paths(doc)))
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if not where:
            if action == "replace":
                doc = draw(hostile_values)
            continue
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        last = where[-1]
        if action == "replace":
            parent[last] = draw(hostile_values)
        elif action == "drop":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(unicode_text)] = draw(hostile_values)
    return doc


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefghi", "bcdefghij", strict=True)
)
TEXT_ATTACKS = {
    "billion laughs as kind": "kind: *j\n",
    "billion laughs as name": "kind: meshUser\napiVersion: v1\nmetadata: {name: *j}\nspec: *j\n",
    "billion laughs as subjects": (
        "kind: meshProjectBinding\napiVersion: v1\nmetadata: {ownedByWorkspace: *j, ownedByProject: p}\n"
        "spec: {role: admin, subjects: *j}\n"
    ),
    "alias to an undefined anchor": "kind: meshUser\nmetadata: *nowhere\n",
    "recursive alias": "a: &r [*r]\n",
    "duplicate keys": (
        "kind: meshUser\nkind: meshWorkspace\nmetadata: {name: a}\nmetadata: {name: b}\nspec: {}\n"
    ),
    "tabs": "kind: meshUser\nmetadata:\n\tname: a\n",
    "deep flow nesting": "kind: meshUser\nspec: " + "[" * 60_000 + "]" * 60_000 + "\n",
    "deep flow mapping": "kind: meshUser\nspec: " + "{a: " * 30_000 + "1" + "}" * 30_000 + "\n",
    "deep block nesting": "kind: meshUser\nspec:\n" + "".join("  " * i + "a:\n" for i in range(1, 400)),
    "huge key": "kind: meshUser\n" + "k" * 300_000 + ": 1\n",
    "many documents": "---\n{}\n" * 3000,
    "unclosed": "kind: meshUser\nmetadata: {name: [\n",
    "python tag": "kind: !!python/object/apply:os.system ['true']\n",
    "binary": "kind: !!binary aGVsbG8=\n",
}
RAW_ATTACKS = {
    "not utf-8": b"kind: meshUser\nmetadata: {name: \xff\xfe}\n",
    "nul bytes": b"kind: meshUser\x00\nmetadata: {}\n",
    "bom": b"\xef\xbb\xbfkind: meshWorkspace\napiVersion: v1\nmetadata: {name: ws}\nspec: {}\n",
    "empty": b"",
}


# --- running ----------------------------------------------------------------------------------


class Workspace:
    def __init__(self, root: Path, aws: MotoAws) -> None:
        self.root, self.aws = root, aws
        (root / "inventory").mkdir(parents=True, exist_ok=True)

    def write(self, config_text: str | bytes, inventory: str | bytes) -> None:
        files = ((self.root / "replicator.yaml", config_text), (self.root / "inventory/org.yaml", inventory))
        for path, data in files:
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data, encoding="utf-8")

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        capsys.readouterr()
        with deadline(RUN_TIMEOUT):
            code = main(["-c", str(self.root / "replicator.yaml"), "--log-format", "json", *args])
        out, err = capsys.readouterr()
        text = out + err
        assert "Traceback" not in text, text[-3000:]
        assert "error: unexpected" not in text, text[-3000:]
        return code, err

    def check(self, capsys: pytest.CaptureFixture[str]) -> None:
        """validate and plan agree, and say exactly where every problem is."""
        code, err = self.run(capsys, "validate")
        assert code in (0, 1)
        if code == 1:
            errors = [line for line in err.splitlines() if line.startswith("error: ")]
            assert errors, err[-2000:]
            unlocated = [line[:300] for line in errors if not LOCATED.match(line)]
            assert unlocated == [], unlocated
        plan_code, plan_err = self.run(capsys, "plan")
        if code == 1:
            assert plan_code == 1
            assert [x for x in plan_err.splitlines() if x.startswith("error: ")] == errors
        else:
            assert plan_code in (0, 1), plan_err[-2000:]


def dump(docs: Any) -> str:
    return yaml.safe_dump_all(docs if isinstance(docs, list) else [docs], allow_unicode=True, sort_keys=False)


@pytest.fixture
def ws(tmp_path: Path, moto_server: MotoAws, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    return Workspace(tmp_path, moto_server)


FUZZ = settings(
    max_examples=20,
    deadline=None,  # a loaded CI machine is slow; hangs are caught by the alarm instead
    derandomize=True,  # a fixed sequence of examples: the suite is never flaky
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
)


@settings(FUZZ, max_examples=10)
@given(docs=inventories())
def test_valid_inventories_validate_and_plan(
    ws: Workspace, capsys: pytest.CaptureFixture[str], docs: Any
) -> None:
    ws.write(dump(config(ws.aws)), dump(docs))
    code, err = ws.run(capsys, "validate")
    assert code == 0, err
    plan_code, plan_err = ws.run(capsys, "plan")
    assert plan_code == 0, plan_err


@FUZZ
@given(data=st.data())
def test_broken_inventories_fail_located(
    ws: Workspace, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    docs = data.draw(inventories())
    broken = data.draw(st.lists(st.sampled_from(range(len(docs))), min_size=1, max_size=3))
    for i in broken:
        docs[i] = data.draw(mutated(docs[i]))
    ws.write(dump(config(ws.aws)), dump(docs))
    ws.check(capsys)


@FUZZ
@given(data=st.data())
def test_broken_configs_fail_located(
    ws: Workspace, capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    cfg = data.draw(mutated(config(ws.aws)))
    ws.write(dump(cfg), dump(data.draw(inventories())))
    ws.check(capsys)


@FUZZ
@given(text=st.text(st.sampled_from([*": -[]{}&*!|>'\"#%@`,?\t\n ab1", "\u00e9", "\u2028"]), max_size=80))
def test_yaml_like_noise(ws: Workspace, capsys: pytest.CaptureFixture[str], text: str) -> None:
    ws.write(dump(config(ws.aws)), text)
    ws.check(capsys)
    ws.write(text, "")
    ws.check(capsys)


def hostile(name: str) -> str:
    """The attack ``name`` (one that expands an alias ``*j`` gets the billion laughs before it)."""
    text = TEXT_ATTACKS[name]
    return BILLION_LAUGHS + text if "*j" in text else text


@pytest.mark.parametrize("name", sorted(TEXT_ATTACKS))
def test_hostile_inventory_text(ws: Workspace, capsys: pytest.CaptureFixture[str], name: str) -> None:
    ws.write(dump(config(ws.aws)), hostile(name))
    ws.check(capsys)


@pytest.mark.parametrize("name", sorted(TEXT_ATTACKS))
def test_hostile_config_text(ws: Workspace, capsys: pytest.CaptureFixture[str], name: str) -> None:
    ws.write(hostile(name), "")
    ws.check(capsys)


@pytest.mark.parametrize("name", sorted(RAW_ATTACKS))
def test_hostile_bytes(ws: Workspace, capsys: pytest.CaptureFixture[str], name: str) -> None:
    ws.write(dump(config(ws.aws)), RAW_ATTACKS[name])
    ws.check(capsys)
    ws.write(RAW_ATTACKS[name], "")
    ws.check(capsys)


def test_deep_nesting_is_reported_where_it_is(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """Before the loader's depth check, 50,000 ``[`` crashed the process (libyaml's binding composes
    recursively: a segfault, no message)."""
    ws.write(dump(config(ws.aws)), "kind: meshUser\n\nspec: " + "[" * 60_000 + "]" * 60_000 + "\n")
    code, err = ws.run(capsys, "validate")
    assert code == 1
    assert f"{ws.root / 'inventory/org.yaml'}:3: nested deeper than 100 levels" in err


LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if getattr(yaml, "__with_libyaml__", False) else [])


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("levels", [101, 150, 1_001, 5_000])
@pytest.mark.parametrize("brackets", ["[]", "{}"])
def test_too_deep_gets_one_message_whichever_parser_stops_first(
    loader: type[yaml.SafeLoader], levels: int, brackets: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML 6.0.4 bundles a libyaml that stops at 1,000 levels with its own message, and its
    scanner stops before our event pass sees level 101; the pure-Python parser has no limit. Each
    depth, each parser: the loader's own message, on the line where the nesting is."""
    monkeypatch.setattr(yamlread, "_Loader", loader)
    opening, closing = brackets
    inner = "a: 1" if opening == "{" else "1"
    text = "kind: meshUser\n\nspec: " + opening * levels + inner + closing * levels + "\n"
    docs, problems = loader_module.parse_yaml_bytes(text.encode(), "org.yaml")
    assert docs == []
    assert [str(p) for p in problems] == [f"org.yaml:3: nested deeper than {loader_module.MAX_DEPTH} levels"]


def test_billion_laughs_is_answered_at_once(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """Before the loader showed only scalars in messages, ``kind: *j`` hung in ``repr`` (10^9 items)."""
    ws.write(dump(config(ws.aws)), BILLION_LAUGHS + "kind: *j\n")
    code, err = ws.run(capsys, "validate")
    assert code == 1
    assert "unknown kind <list>" in err
