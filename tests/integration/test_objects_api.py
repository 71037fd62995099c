"""The meshObject API (``/api/meshobjects``) of a daemon started in-process, over real HTTP; API
keys created with the CLI. The platform is never called (no workers), so no backend is needed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text

from replicator.cli import main
from replicator.service.daemon import Daemon
from state import ObjectWrite, Store

PLATFORM = "kubernetes.dev"
TENANT = f"finance/ledger/{PLATFORM}"
READ_KEY, WRITE_KEY = "objects-api-read-key", "objects-api-write-key"
YAML = {"Content-Type": "application/yaml"}


def config(stored_objects: bool = True) -> dict[str, Any]:
    return {
        "state": "sqlite:///state.db",
        "inventory": ["inventory"],
        "storedObjects": stored_objects,
        "platforms": [
            {
                "identifier": PLATFORM,
                "type": "kubernetes",
                "euidPattern": "%s",
                # Never called: the daemons of these tests run no workers.
                "kubernetes": {"server": "https://127.0.0.1:9", "token": {"env": "NO_SUCH_TOKEN"}},
            }
        ],
        "landingZones": [
            {
                "identifier": "k8s-default",
                "platform": PLATFORM,
                "roleMappings": {
                    "admin": {"platformGroupAlias": "admin", "platformRoles": ["admin"]},
                    "reader": {"platformGroupAlias": "reader", "platformRoles": ["view"]},
                },
            }
        ],
        "api": {
            "keys": [
                {"name": "dash", "secret": {"env": "OBJ_KEY_READ"}, "scopes": ["read"]},
                {"name": "ci", "secret": {"env": "OBJ_KEY_WRITE"}, "scopes": ["write"]},
            ]
        },
    }


FILE_OBJECTS = """\
apiVersion: v1
kind: meshUser
metadata: {name: alice}
spec: {username: alice, email: alice@example.com, euid: alice}
---
apiVersion: v1
kind: meshWorkspace
metadata: {name: finance}
spec: {}
---
apiVersion: v1
kind: meshProject
metadata: {name: ledger, ownedByWorkspace: finance}
spec: {tags: {}}
"""


def write_project(root: Path, stored_objects: bool = True) -> Path:
    (root / "inventory").mkdir(exist_ok=True)
    (root / "inventory" / "org.yaml").write_text(FILE_OBJECTS)
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump(config(stored_objects), sort_keys=False))
    return path


def user(name: str, euid: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "meshUser",
        "metadata": {"name": name},
        "spec": {"username": name, "email": f"{name}@example.com", "euid": euid or name},
    }


def binding(name: str, *users: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "meshProjectBinding",
        "metadata": {"name": name, "ownedByWorkspace": "finance", "ownedByProject": "ledger"},
        "spec": {"role": "reader", "subjects": [{"user": u} for u in users]},
    }


TENANT_DOC = {
    "apiVersion": "v1",
    "kind": "meshTenant",
    "metadata": {"ownedByWorkspace": "finance", "ownedByProject": "ledger", "platformIdentifier": PLATFORM},
    "spec": {"localId": "finance-ledger", "landingZoneIdentifier": "k8s-default"},
}


def as_yaml(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


@dataclass
class Api:
    daemon: Daemon
    http: httpx.AsyncClient
    config_path: Path
    admin: str
    """Secret of a stored key with the admin scope (created with the CLI)."""

    @property
    def store(self) -> Store:
        assert self.daemon.store is not None
        return self.daemon.store

    def auth(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    async def put(self, body: str, secret: str = WRITE_KEY, **headers: str) -> httpx.Response:
        return await self.http.put(
            "/api/meshobjects", content=body, headers={**YAML, **self.auth(secret), **headers}
        )


def cli(config_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["-c", str(config_path), "--log-format", "json", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Api]:
    monkeypatch.setenv("OBJ_KEY_READ", READ_KEY)
    monkeypatch.setenv("OBJ_KEY_WRITE", WRITE_KEY)
    path = write_project(tmp_path)
    code, out, _ = cli(path, capsys, "apikey", "create", "root", "--scopes", "admin")
    assert code == 0
    d = Daemon(config_path=path, listen=("127.0.0.1", 0), workers=0, watch_interval=0.2, grace=1)
    await d.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}", timeout=30) as http:
            yield Api(d, http, path, out.strip())
    finally:
        await d.stop()


async def test_put_yaml_creates_objects_the_daemon_uses_at_once(api: Api) -> None:
    assert api.daemon.validated is not None
    assert TENANT not in api.daemon.validated.inventory.tenants
    r = await api.put(as_yaml(user("bob"), binding("readers", "bob"), TENANT_DOC))
    assert r.status_code == 200, r.text
    assert r.json()["created"] == [
        {"kind": "meshUser", "key": "bob"},
        {"kind": "meshProjectBinding", "key": "finance/ledger/readers"},
        {"kind": "meshTenant", "key": TENANT},
    ]
    assert r.json()["updated"] == []
    assert r.json()["unchanged"] == []
    await api.daemon.settled()  # the write returned before its reload
    inventory = api.daemon.validated.inventory
    assert "bob" in inventory.users
    assert TENANT in inventory.tenants
    assert api.daemon.queue.depth() == 1, "the new tenant is queued"
    assert TENANT in api.daemon.tenants
    stored = api.store.get_object("meshUser", "bob")
    assert stored is not None
    assert stored.source == "api"
    assert stored.document == user("bob")

    again = await api.put(as_yaml(user("bob", euid="bob2"), binding("readers", "bob")))
    assert again.json()["updated"] == [{"kind": "meshUser", "key": "bob"}]
    assert again.json()["unchanged"] == [{"kind": "meshProjectBinding", "key": "finance/ledger/readers"}]
    await api.daemon.settled()
    assert api.daemon.validated.inventory.users["bob"].spec.euid == "bob2"


async def test_put_json_one_object_or_a_list(api: Api) -> None:
    headers = {**api.auth(WRITE_KEY), "Content-Type": "application/json"}
    one = await api.http.put("/api/meshobjects", content=json.dumps(user("bob")), headers=headers)
    assert one.status_code == 200
    assert one.json()["created"] == [{"kind": "meshUser", "key": "bob"}]
    many = await api.http.put(
        "/api/meshobjects", content=json.dumps([user("carol"), user("dave")], indent=1), headers=headers
    )
    assert many.status_code == 200
    assert [o["key"] for o in many.json()["created"]] == ["carol", "dave"]
    # A JSON problem is located by line like a YAML one.
    bad = json.dumps([user("erin"), {**user("frank"), "spec": {"euid": 5}}], indent=1)
    r = await api.http.put("/api/meshobjects", content=bad, headers=headers)
    assert r.status_code == 422
    (problem,) = r.json()["errors"]
    assert problem["file"] == "request"
    assert problem["field"] == "spec.euid"
    assert bad.splitlines()[problem["line"] - 1].strip().startswith('"euid"')
    broken = await api.http.put("/api/meshobjects", content='{"kind": ', headers=headers)
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["message"].startswith("invalid JSON")
    assert api.store.get_object("meshUser", "erin") is None
    # A key given twice is refused, in JSON as in YAML (both would keep the last one silently).
    twice = '{"kind": "meshUser", "metadata": {"name": "gina"}, "spec": {"euid": "a", "euid": "b"}}'
    r = await api.http.put("/api/meshobjects", content=twice, headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["message"] == "invalid JSON: duplicate key 'euid'"
    r = await api.http.put(
        "/api/meshobjects", content=twice, headers={**headers, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 422
    assert "duplicate key 'euid'" in r.json()["errors"][0]["message"]
    assert api.store.get_object("meshUser", "gina") is None


async def test_an_invalid_document_is_located_and_nothing_is_written(api: Api) -> None:
    before = api.store.objects_revision()
    body = (
        as_yaml(user("bob"))
        + "---\napiVersion: v1\nkind: meshUser\nmetadata: {name: carol}\nspec: {emal: x}\n"
    )
    r = await api.put(body)
    assert r.status_code == 422
    (problem,) = r.json()["errors"]
    assert problem == {
        "file": "request",
        "line": body.splitlines().index("spec: {emal: x}") + 1,
        "object": "meshUser carol",
        "field": "spec.emal",
        "message": "unknown field",
    }
    syntax = await api.put("apiVersion: v1\nkind: [meshUser\n")
    assert syntax.status_code == 422
    assert syntax.json()["errors"][0]["message"].startswith("invalid YAML")
    assert syntax.json()["errors"][0]["file"] == "request"
    assert syntax.json()["errors"][0]["line"]
    assert api.store.objects_revision() == before
    assert api.store.get_object("meshUser", "bob") is None


async def test_valid_objects_with_an_inventory_problem_write_nothing(api: Api) -> None:
    before = api.store.objects_revision()
    # Each object is well-formed; the binding names a user nobody defines.
    body = as_yaml(user("bob"), binding("readers", "bob", "ghost"))
    r = await api.put(body)
    assert r.status_code == 422
    (problem,) = r.json()["errors"]
    assert problem["file"] == "request"
    assert problem["object"].startswith("meshProjectBinding")
    assert problem["line"] == body.splitlines().index("  - user: ghost") + 1
    assert "ghost" in problem["message"]
    # A euid another user (a file's) already has.
    clash = await api.put(as_yaml(user("bob", euid="alice")))
    assert clash.status_code == 422
    assert "euid" in json.dumps(clash.json()).lower()
    unnamed = binding("x", "alice")
    del unnamed["metadata"]["name"]
    r = await api.put(as_yaml(unnamed))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "metadata.name"
    twice = await api.put(as_yaml(user("bob"), user("bob")))
    assert twice.status_code == 422
    assert "twice" in twice.json()["errors"][0]["message"]
    assert api.store.objects_revision() == before
    assert api.store.list_objects() == []


async def test_file_objects_are_read_only(api: Api) -> None:
    r = await api.put(as_yaml(user("bob"), user("alice", euid="alice-new")))
    assert r.status_code == 409
    assert "inventory file" in r.json()["error"]
    assert r.json()["objects"] == [{"kind": "meshUser", "key": "alice"}]
    assert api.store.get_object("meshUser", "bob") is None, "all or nothing"
    gone = await api.http.delete("/api/meshobjects/meshProject/finance/ledger", headers=api.auth(api.admin))
    assert gone.status_code == 409


async def test_another_sources_objects_need_the_admin_scope(api: Api) -> None:
    api.store.write_objects("ldap:corp", puts=[ObjectWrite("meshUser", "bob", user("bob"))])
    api.daemon.objects_changed()
    r = await api.put(as_yaml(user("bob", euid="bob2")))
    assert r.status_code == 409
    assert "ldap:corp" in r.json()["error"]
    assert r.json()["owned"] == [{"kind": "meshUser", "key": "bob", "source": "ldap:corp"}]
    refused = await api.http.delete("/api/meshobjects/meshUser/bob", headers=api.auth(WRITE_KEY))
    assert refused.status_code == 409
    stored = api.store.get_object("meshUser", "bob")
    assert stored is not None
    assert stored.source == "ldap:corp"
    assert stored.document == user("bob")

    taken = await api.put(as_yaml(user("bob", euid="bob2")), secret=api.admin)
    assert taken.status_code == 200
    assert taken.json()["updated"] == [{"kind": "meshUser", "key": "bob"}]
    stored = api.store.get_object("meshUser", "bob")
    assert stored is not None
    assert stored.source == "api"
    assert stored.document["spec"]["euid"] == "bob2"


async def test_get_all_per_kind_and_per_key(api: Api) -> None:
    assert (await api.put(as_yaml(user("bob"), binding("readers", "bob")))).status_code == 200
    read = api.auth(READ_KEY)
    everything = (await api.http.get("/api/meshobjects", headers=read)).json()["items"]
    found = {(i["kind"], i["key"]): (i["source"], i["readOnly"]) for i in everything}
    assert found == {
        ("meshUser", "alice"): ("file", True),
        ("meshUser", "bob"): ("api", False),
        ("meshWorkspace", "finance"): ("file", True),
        ("meshProject", "finance/ledger"): ("file", True),
        ("meshProjectBinding", "finance/ledger/readers"): ("api", False),
    }
    users = (await api.http.get("/api/meshobjects/meshUser", headers=read)).json()["items"]
    assert [u["key"] for u in users] == ["alice", "bob"]
    stored = (await api.http.get("/api/meshobjects/meshUser?source=store", headers=read)).json()["items"]
    assert [u["key"] for u in stored] == ["bob"]
    files = (await api.http.get("/api/meshobjects/meshUser?source=files", headers=read)).json()["items"]
    assert [(u["key"], u["file"], u["line"]) for u in files] == [("alice", "inventory/org.yaml", 1)]

    one = await api.http.get("/api/meshobjects/meshProjectBinding/finance/ledger/readers", headers=read)
    assert one.status_code == 200
    assert one.json()["object"] == binding("readers", "bob")
    as_text = await api.http.get(
        "/api/meshobjects/meshUser/bob", headers={**read, "Accept": "application/yaml"}
    )
    assert as_text.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_text.text) == user("bob")
    listing = await api.http.get("/api/meshobjects", headers={**read, "Accept": "text/yaml"})
    assert len(list(yaml.safe_load_all(listing.text))) == 5

    assert (await api.http.get("/api/meshobjects/meshUser/nobody", headers=read)).status_code == 404
    assert (await api.http.get("/api/meshobjects/meshThing", headers=read)).status_code == 404
    bad = await api.http.get("/api/meshobjects?source=everything", headers=read)
    assert bad.status_code == 400
    assert "source" in bad.json()["error"]


async def test_delete(api: Api) -> None:
    assert (await api.put(as_yaml(user("bob"), user("carol"), binding("readers", "bob")))).status_code == 200
    write = api.auth(WRITE_KEY)
    before = api.store.objects_revision()
    refused = await api.http.delete("/api/meshobjects/meshUser/bob", headers=write)
    assert refused.status_code == 422
    (problem,) = refused.json()["errors"]
    assert problem["object"] == "meshProjectBinding finance/ledger/readers"
    assert problem["field"] == "spec.subjects[0].user"
    assert "bob" in problem["message"]
    assert api.store.objects_revision() == before
    assert api.store.get_object("meshUser", "bob") is not None

    head = await api.http.head("/api/meshobjects/meshUser/carol", headers=write)
    assert head.status_code == 200
    assert api.store.get_object("meshUser", "carol") is not None, "HEAD reads, never deletes"
    ok = await api.http.delete("/api/meshobjects/meshUser/carol", headers=write)
    assert ok.status_code == 204
    assert api.store.get_object("meshUser", "carol") is None
    await api.daemon.settled()
    assert "carol" not in api.daemon.validated.inventory.users  # type: ignore[union-attr]
    assert (await api.http.delete("/api/meshobjects/meshUser/carol", headers=write)).status_code == 404
    assert (await api.http.delete("/api/meshobjects/meshThing/x", headers=write)).status_code == 404
    binding_gone = await api.http.delete(
        "/api/meshobjects/meshProjectBinding/finance/ledger/readers", headers=write
    )
    assert binding_gone.status_code == 204
    assert (await api.http.delete("/api/meshobjects/meshUser/bob", headers=write)).status_code == 204


ROUTES = [
    ("GET", "/api/meshobjects", "read"),
    ("GET", "/api/meshobjects/meshUser", "read"),
    ("GET", "/api/meshobjects/meshUser/alice", "read"),
    ("PUT", "/api/meshobjects", "write"),
    ("DELETE", "/api/meshobjects/meshUser/bob", "write"),
    ("GET", "/v1/status", "read"),
    ("POST", f"/v1/tenants/{TENANT}/reconcile", "write"),
]


async def test_every_route_needs_a_key_with_its_scope(api: Api) -> None:
    before = api.store.objects_revision()
    for method, path, scope in ROUTES:
        body = as_yaml(user("bob")) if method == "PUT" else None
        for headers in ({}, api.auth("not-a-key"), {"Authorization": "Basic eDp5"}):
            r = await api.http.request(method, path, content=body, headers={**YAML, **headers})
            assert r.status_code == 401, (method, path, headers)
            assert r.headers["www-authenticate"] == "Bearer"
        if scope == "write":
            r = await api.http.request(method, path, content=body, headers={**YAML, **api.auth(READ_KEY)})
            assert r.status_code == 403, (method, path)
        else:
            r = await api.http.request(method, path, headers=api.auth(READ_KEY))
            assert r.status_code == 200, (method, path)
    assert api.store.objects_revision() == before
    assert api.store.list_objects() == []
    doc = await api.http.get("/api/openapi.json")
    assert doc.status_code == 200, "documentation needs no key"


async def test_limits_and_media_types(api: Api) -> None:
    huge = "# " + "x" * 5_000_001 + "\n"
    assert (await api.put(huge)).status_code == 413
    r = await api.http.put(
        "/api/meshobjects",
        content=as_yaml(user("bob")),
        headers={**api.auth(WRITE_KEY), "Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    assert "application/yaml" in r.json()["error"]
    empty = await api.put("")
    assert empty.status_code == 422
    assert "no meshObjects" in empty.json()["errors"][0]["message"]
    deep = await api.put("spec: " + "[" * 200 + "]" * 200 + "\n")
    assert deep.status_code == 422
    assert "nested deeper" in deep.json()["errors"][0]["message"]


async def test_stored_objects_off_answers_409(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJ_KEY_READ", READ_KEY)
    monkeypatch.setenv("OBJ_KEY_WRITE", WRITE_KEY)
    path = write_project(tmp_path, stored_objects=False)
    d = Daemon(config_path=path, listen=("127.0.0.1", 0), workers=0, watch_interval=0.2, grace=1)
    await d.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}") as http:
            auth = {"Authorization": f"Bearer {WRITE_KEY}"}
            for method, url in (("GET", "/api/meshobjects"), ("PUT", "/api/meshobjects")):
                r = await http.request(method, url, content=as_yaml(user("bob")), headers={**YAML, **auth})
                assert r.status_code == 409
                assert "storedObjects: true" in r.json()["error"]
            assert d.store is not None
            assert d.store.list_objects() == []
    finally:
        await d.stop()


async def test_stored_api_keys_are_hashed_listed_and_revoked(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(api.config_path, capsys, "apikey", "create", "deploy", "--scopes", "read,write")
    secret = out.strip()
    assert code == 0
    assert secret.startswith("rpk_")
    assert secret not in err
    with api.store.engine.connect() as conn:
        dumped = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert secret not in dumped, "only the hash is stored"
    assert (await api.put(as_yaml(user("bob")), secret=secret)).status_code == 200

    code, out, _ = cli(api.config_path, capsys, "apikey", "list", "-o", "json")
    listed = {k["name"]: k for k in json.loads(out)["keys"]}
    assert code == 0
    assert set(listed) == {"root", "deploy", "dash", "ci"}, "the config file's keys are listed too"
    assert secret not in out
    assert READ_KEY not in out
    assert listed["deploy"]["scopes"] == ["read", "write"]
    assert listed["deploy"]["lastUsedAt"] is not None
    assert (listed["deploy"]["source"], listed["dash"]["source"]) == ("store", "config")
    assert listed["dash"]["secretFrom"] == "env OBJ_KEY_READ"
    code, out, _ = cli(api.config_path, capsys, "apikey", "list")
    assert code == 0
    assert "deploy  read,write  stored" in out
    assert "dash  read  config, secret from env OBJ_KEY_READ" in out
    code, _, err = cli(api.config_path, capsys, "apikey", "revoke", "dash")
    assert code == 1
    assert "it is in the config file (api.keys); remove it there" in err

    assert cli(api.config_path, capsys, "apikey", "create", "deploy")[0] == 1, "names are unique"
    code, _, err = cli(api.config_path, capsys, "apikey", "create", "x", "--scopes", "read,root")
    assert code == 1
    assert "--scopes" in err
    code, out, _ = cli(
        api.config_path, capsys, "apikey", "create", "bot", "--scopes", "write,read", "-o", "json"
    )
    created = json.loads(out)
    assert code == 0
    assert (created["name"], created["scopes"]) == ("bot", ["read", "write"])
    assert (await api.put(as_yaml(user("dave")), secret=created["secret"])).status_code == 200
    code, out, _ = cli(api.config_path, capsys, "apikey", "revoke", "bot", "-o", "json")
    assert (code, json.loads(out)) == (0, {"name": "bot", "revoked": True})
    code, _, _ = cli(api.config_path, capsys, "apikey", "revoke", "deploy")
    assert code == 0
    r = await api.put(as_yaml(user("carol")), secret=secret)
    assert r.status_code == 401, "a revoked key is refused at once"
    code, _, err = cli(api.config_path, capsys, "apikey", "revoke", "deploy")
    assert code == 1
    assert "no stored API key" in err


async def test_openapi_document(api: Api) -> None:
    doc = (await api.http.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert {"/healthz", "/readyz", "/metrics", "/v1/status", "/api/meshobjects"} <= set(doc["paths"])
    assert set(doc["paths"]["/api/meshobjects/{kind}/{key}"]) == {"get", "delete"}
    assert "MeshUser" in doc["components"]["schemas"]
    put = doc["paths"]["/api/meshobjects"]["put"]
    assert set(put["requestBody"]["content"]) == {"application/yaml", "application/json"}


async def test_a_broken_inventory_file_refuses_writes_with_its_problems(api: Api) -> None:
    broken = api.config_path.parent / "inventory" / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: meshUser\nmetadata: {name: zed}\nspec: {nope: 1}\n")
    r = await api.put(as_yaml(user("bob")))
    assert r.status_code == 422
    (problem,) = r.json()["errors"]
    assert problem["file"].endswith("broken.yaml")
    assert problem["line"] == 4
    assert api.store.get_object("meshUser", "bob") is None
    listed = await api.http.get("/api/meshobjects?source=store", headers=api.auth(READ_KEY))
    assert listed.status_code == 200, "reading the store needs no valid file"
