"""The SCIM 2.0 service provider (replicator/sources/scim/) over real HTTP: the daemon runs in a
thread of its own (uvicorn on a free port of 127.0.0.1), driven by scim2-client and by raw httpx
requests shaped like Entra ID's."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from scim2_models import Group, GroupMember, PatchOp

from tests.support.scim_served import (
    ENTERPRISE,
    PATCH,
    TOKEN,
    ScimUser,
    Served,
    entra_user,
    error,
    serve,
    write_config,
)

# --- auth and discovery ------------------------------------------------------------------------


def test_the_token_is_required(served: Served) -> None:
    with served.http(token=None) as anonymous:
        assert error(anonymous.get("/Users")) == (401, None)
    with served.http(token="wrong-token") as wrong:
        r = wrong.post("/Users", json=entra_user("a@example.com"))
        assert error(r) == (401, None)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert served.store().scim_resources("User") == []
    with served.http() as http:
        assert http.get("/Users").status_code == 200


@pytest.mark.parametrize("served", [{"enabled": False}], indirect=True)
def test_a_disabled_provider_answers_404(served: Served) -> None:
    with served.http() as http:
        assert error(http.get("/Users")) == (404, None)
        assert error(http.get("/ServiceProviderConfig")) == (404, None)


def test_discovery(served: Served) -> None:
    with served.http() as http:
        spc = http.get("/ServiceProviderConfig").json()
        assert spc["patch"]["supported"] is True
        assert spc["bulk"]["supported"] is False
        assert spc["sort"]["supported"] is False
        assert spc["etag"]["supported"] is True
        types = http.get("/ResourceTypes").json()
        assert {r["name"] for r in types["Resources"]} == {"User", "Group"}
        assert http.get("/ResourceTypes/User").json()["schemaExtensions"][0]["schema"] == ENTERPRISE
        schemas = http.get("/Schemas").json()
        assert {s["id"] for s in schemas["Resources"]} == {
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:core:2.0:Group",
            ENTERPRISE,
        }
        assert http.get(f"/Schemas/{ENTERPRISE}").json()["name"] == "EnterpriseUser"
        assert error(http.get("/Schemas/urn:nope")) == (404, None)
        assert error(http.get("/Nope")) == (404, None)


# --- users ------------------------------------------------------------------------------------


def test_scim2_client_round_trip_and_the_stored_meshuser(served: Served) -> None:
    client = served.scim()
    created = client.create(
        ScimUser(
            user_name="bjensen@example.com",
            external_id="entra-oid-1",
            name={"given_name": "Barbara", "family_name": "Jensen"},
            emails=[{"value": "bjensen@example.com", "primary": True}],
            phone_numbers=[{"value": "+1 555 0100", "type": "work"}],
        )
    )
    assert not isinstance(created, dict)
    assert created.user_name == "bjensen@example.com"
    assert created.id
    assert len(created.id) == 32
    assert created.meta is not None
    assert created.meta.version == 'W/"1"'
    assert created.meta.location == f"{served.base}/Users/{created.id}"

    fetched = client.query(ScimUser, created.id)
    assert fetched.id == created.id
    assert fetched.user_name == "bjensen@example.com"
    assert fetched.phone_numbers is not None
    assert fetched.phone_numbers[0].value == "+1 555 0100"

    stored = served.store().get_object("meshUser", created.id)
    assert stored is not None
    assert (stored.source, stored.external_id) == ("scim", "entra-oid-1")
    assert stored.document["spec"] == {
        "username": "bjensen@example.com",
        "email": "bjensen@example.com",
        "euid": "bjensen@example.com",
        "givenName": "Barbara",
        "familyName": "Jensen",
    }
    assert served.inventory_users()[created.id].spec.euid == "bjensen@example.com"

    fetched.display_name = "Babs"
    fetched.phone_numbers = None
    replaced = client.replace(fetched)
    assert replaced.id == created.id
    assert replaced.display_name == "Babs"
    assert replaced.phone_numbers is None
    assert replaced.meta is not None
    assert replaced.meta.version == 'W/"2"'

    patch = PatchOp[ScimUser](operations=[{"op": "replace", "path": "name.givenName", "value": "Barb"}])
    patched = client.modify(ScimUser, created.id, patch)
    assert patched is not None
    assert patched.name is not None
    assert patched.name.given_name == "Barb"
    assert served.inventory_users()[created.id].spec.given_name == "Barb"

    client.delete(ScimUser, created.id)
    with served.http() as http:
        assert error(http.get(f"/Users/{created.id}")) == (404, None)
        assert error(http.delete(f"/Users/{created.id}")) == (404, None)
    gone = served.store().get_object("meshUser", created.id)
    assert gone is not None
    assert gone.deprovisioned_at is not None, "kept for the bindings that name it"
    assert created.id not in served.inventory_users()


def test_entra_style_requests(served: Served) -> None:
    with served.http() as http:
        r = http.post("/Users", json=entra_user("alice@example.com"))
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/scim+json")
        alice = r.json()
        assert r.headers["location"] == alice["meta"]["location"]
        assert r.headers["etag"] == alice["meta"]["version"]
        assert alice[ENTERPRISE]["employeeNumber"] == "4711"

        # Entra's existence check before it creates a user
        found = http.get("/Users", params={"filter": 'userName eq "ALICE@example.com"'}).json()
        assert (found["totalResults"], found["Resources"][0]["id"]) == (1, alice["id"])
        none = http.get("/Users", params={"filter": 'userName eq "nobody@example.com"'}).json()
        assert (none["totalResults"], none.get("Resources", [])) == (0, [])

        # the same userName again: uniqueness
        assert error(http.post("/Users", json=entra_user("Alice@Example.com"))) == (409, "uniqueness")

        # Entra's PATCH without path, value as a dict, booleans as strings
        ops = {
            "schemas": [PATCH],
            "Operations": [
                {"op": "Replace", "value": {"displayName": "Alice A.", "name.familyName": "Anders"}},
                {"op": "Add", "path": 'emails[type eq "home"].value', "value": "alice@home.example"},
            ],
        }
        r = http.patch(f"/Users/{alice['id']}", json=ops)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["displayName"] == "Alice A."
        assert body["name"]["familyName"] == "Anders"
        assert {e["value"] for e in body["emails"]} == {"alice@example.com", "alice@home.example"}
        assert served.inventory_users()[alice["id"]].spec.family_name == "Anders"

        # soft delete: active "False" deprovisions the meshUser, the SCIM resource stays readable
        soft = {"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
        r = http.patch(f"/Users/{alice['id']}", json=soft)
        assert r.status_code == 200, r.text
        assert r.json()["active"] is False
        assert http.get(f"/Users/{alice['id']}").json()["active"] is False
        stored = served.store().get_object("meshUser", alice["id"])
        assert stored is not None
        assert stored.deprovisioned_at is not None
        assert alice["id"] not in served.inventory_users()

        # re-activation revives it
        revive = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": "True"}}]}
        assert http.patch(f"/Users/{alice['id']}", json=revive).status_code == 200
        stored = served.store().get_object("meshUser", alice["id"])
        assert stored is not None
        assert stored.deprovisioned_at is None
        assert alice["id"] in served.inventory_users()


def test_filters_pagination_and_attributes(served: Served) -> None:
    with served.http() as http:
        ids = {}
        for n in range(5):
            name = f"user{n}@{'corp' if n % 2 else 'example'}.com"
            r = http.post("/Users", json=entra_user(name, externalId=f"x{n}"))
            assert r.status_code == 201, r.text
            ids[n] = r.json()["id"]

        def ids_of(flt: str) -> set[str]:
            r = http.get("/Users", params={"filter": flt})
            assert r.status_code == 200, (flt, r.text)
            return {u["id"] for u in r.json().get("Resources", [])}

        assert ids_of('userName sw "user1"') == {ids[1]}
        # userName and id equality are indexed lookups; userName compares case-insensitively
        assert ids_of('userName eq "USER2@example.com"') == {ids[2]}
        assert ids_of('userName eq "user2@example"') == set()
        assert ids_of(f'id eq "{ids[3]}"') == {ids[3]}
        assert ids_of('id eq "no-such-id"') == set()
        assert ids_of('userName ew "@corp.com"') == {ids[1], ids[3]}
        assert ids_of('userName co "3@"') == {ids[3]}
        assert ids_of('externalId eq "x2"') == {ids[2]}
        assert ids_of('externalId ne "x2"') == set(ids.values()) - {ids[2]}
        assert ids_of('emails.value eq "user4@example.com"') == {ids[4]}
        assert ids_of('emails[type eq "work" and value co "corp"]') == {ids[1], ids[3]}
        assert ids_of(f'id eq "{ids[0]}" or (externalId eq "x4" and not (userName ew "corp.com"))') == {
            ids[0],
            ids[4],
        }
        assert ids_of("title pr") == set()
        assert ids_of('meta.lastModified gt "2000-01-01T00:00:00Z"') == set(ids.values())
        assert error(http.get("/Users", params={"filter": 'userName eqq "x"'})) == (400, "invalidFilter")
        assert error(http.get("/Users", params={"filter": 'nope eq "x"'})) == (400, "invalidFilter")

        page = http.get("/Users", params={"startIndex": 2, "count": 2}).json()
        assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
        assert [u["id"] for u in page["Resources"]] == [ids[1], ids[2]]
        last = http.get("/Users", params={"startIndex": 5, "count": 10}).json()
        assert [u["id"] for u in last["Resources"]] == [ids[4]]
        only_count = http.get("/Users", params={"count": 0}).json()
        assert (only_count["totalResults"], only_count.get("Resources", [])) == (5, [])
        assert error(http.get("/Users", params={"count": "many"})) == (400, "invalidValue")

        slim = http.get(f"/Users/{ids[0]}", params={"attributes": "userName"}).json()
        assert slim["userName"] == "user0@example.com"
        assert "emails" not in slim
        assert slim["id"] == ids[0]
        no_mail = http.get("/Users", params={"excludedAttributes": "emails", "count": 1}).json()
        assert "emails" not in no_mail["Resources"][0]
        assert "userName" in no_mail["Resources"][0]


def test_errors_are_located_and_typed(served: Served) -> None:
    with served.http() as http:
        assert error(
            http.post("/Users", content=b"{not json", headers={"content-type": "application/scim+json"})
        ) == (
            400,
            "invalidSyntax",
        )
        r = http.post("/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]})
        assert r.status_code == 400
        assert "userName" in r.json()["detail"]
        created = http.post("/Users", json=entra_user("erin@example.com")).json()
        uid = created["id"]
        bad_path = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "nope[", "value": "x"}]}
        assert error(http.patch(f"/Users/{uid}", json=bad_path))[0] == 400
        bad_op = {"schemas": [PATCH], "Operations": [{"op": "frobnicate", "path": "title", "value": "x"}]}
        assert error(http.patch(f"/Users/{uid}", json=bad_op))[0] == 400
        no_target = {
            "schemas": [PATCH],
            "Operations": [
                {
                    "op": "replace",
                    "path": 'emails[value eq "x@x.example" or value eq "y@y.example"].type',
                    "value": "work",
                }
            ],
        }
        assert error(http.patch(f"/Users/{uid}", json=no_target)) == (400, "noTarget")
        assert error(http.get("/Users/does-not-exist")) == (404, None)
        # attributes/excludedAttributes must name attributes of the resource type (RFC 7644 3.9)
        assert error(http.get("/Users", params={"attributes": "nosuch.attr"})) == (400, "invalidPath")
        assert error(http.get(f"/Users/{uid}", params={"excludedAttributes": "emails.nosuch"})) == (
            400,
            "invalidPath",
        )
        assert error(http.get("/Groups", params={"attributes": "userName"})) == (400, "invalidPath")
        search = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "attributes": ["nope"]}
        assert error(http.post("/.search", json=search)) == (400, "invalidPath")
        ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"
        assert http.get("/Users", params={"attributes": f"name.givenName,{ext}"}).status_code == 200
        # If-Match: a stale version is refused, the current one accepted
        stale = http.put(f"/Users/{uid}", json=entra_user("erin@example.com"), headers={"If-Match": 'W/"99"'})
        assert error(stale) == (412, None)
        ok = http.put(
            f"/Users/{uid}", json=entra_user("erin@example.com", title="Dr"), headers={"If-Match": 'W/"1"'}
        )
        assert ok.status_code == 200
        assert ok.json()["title"] == "Dr"
        assert ok.json()["meta"]["version"] == 'W/"2"'


def test_an_euid_taken_by_a_file_user_is_refused(served: Served) -> None:
    with served.http() as http:
        r = http.post("/Users", json=entra_user("taken@example.com"))
        assert error(r) == (409, "uniqueness")
        assert "taken@example.com" in r.json()["detail"]
        assert "filey" in r.json()["detail"]
    assert served.store().scim_resources("User") == []
    assert served.store().list_objects("meshUser", source="scim") == []


@pytest.mark.parametrize("served", [{"euid_attribute": "employeeNumber"}], indirect=True)
def test_euid_from_an_enterprise_attribute(served: Served) -> None:
    with served.http() as http:
        r = http.post("/Users", json=entra_user("frank@example.com"))
        assert r.status_code == 201, r.text
    assert served.inventory_users()[r.json()["id"]].spec.euid == "4711"


# --- groups -----------------------------------------------------------------------------------


def test_groups_and_entra_membership_patches(served: Served) -> None:
    with served.http() as http:
        a = http.post("/Users", json=entra_user("ann@example.com")).json()["id"]
        b = http.post("/Users", json=entra_user("ben@example.com")).json()["id"]
        r = http.post(
            "/Groups",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Finance Admins",
                "externalId": "g-1",
                "members": [{"value": a}],
            },
        )
        assert r.status_code == 201, r.text
        gid = r.json()["id"]

        def mesh_members() -> list[str]:
            served.settled()
            assert served.daemon.validated is not None
            return list(served.daemon.validated.inventory.groups[gid].spec.members)

        assert mesh_members() == [a]
        group = served.store().get_object("meshUserGroup", gid)
        assert group is not None
        assert group.document["spec"]["displayName"] == "Finance Admins"
        assert group.external_id == "g-1"

        add = {"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": b}]}]}
        assert http.patch(f"/Groups/{gid}", json=add).status_code == 200
        assert sorted(mesh_members()) == sorted([a, b])
        assert http.get("/Groups", params={"filter": f'members.value eq "{b}"'}).json()["totalResults"] == 1

        remove = {"schemas": [PATCH], "Operations": [{"op": "Remove", "path": f'members[value eq "{a}"]'}]}
        assert http.patch(f"/Groups/{gid}", json=remove).status_code == 200
        assert mesh_members() == [b]

        # Entra: remove with the member in "value" instead of a path filter
        entra_remove = {
            "schemas": [PATCH],
            "Operations": [{"op": "Remove", "path": "members", "value": [{"value": b}]}],
        }
        assert http.patch(f"/Groups/{gid}", json=entra_remove).status_code == 200
        assert mesh_members() == []

        unknown = {
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": "nobody"}]}],
        }
        assert error(http.patch(f"/Groups/{gid}", json=unknown)) == (400, "invalidValue")

        # deleting a user takes it out of its groups
        assert http.patch(f"/Groups/{gid}", json=add).status_code == 200
        assert http.delete(f"/Users/{b}").status_code == 204
        assert mesh_members() == []
        assert http.get(f"/Groups/{gid}").json().get("members", []) == []

        assert http.delete(f"/Groups/{gid}").status_code == 204
        assert served.store().get_object("meshUserGroup", gid) is None
        assert error(http.get(f"/Groups/{gid}")) == (404, None)


def test_scim2_client_groups(served: Served) -> None:
    client = served.scim()
    user = client.create(ScimUser(user_name="gus@example.com"))
    assert user.id
    group = client.create(Group(display_name="Readers", members=[GroupMember(value=user.id)]))
    assert group.id
    listed = client.query(Group)
    assert listed.total_results == 1  # type: ignore[union-attr]
    assert served.store().get_object("meshUserGroup", group.id) is not None


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scim", "stored_objects", "expected"),
    [
        (
            {"enabled": True},
            True,
            "replicator.yaml:3: identity.scim: Value error, identity.scim.enabled needs a token",
        ),
        (
            {"enabled": True, "token": {"env": "SCIM_TEST_TOKEN"}},
            False,
            "storedObjects: true is required by identity.scim (enabled)",
        ),
        (
            {"enabled": True, "token": {"env": "SCIM_TEST_TOKEN"}, "euidAttribute": "phoneNumbers"},
            True,
            "identity.scim.euidAttribute: Value error, 'phoneNumbers' is not a SCIM attribute",
        ),
    ],
)
def test_config_problems_are_located(
    tmp_path: Path, scim: dict[str, Any], stored_objects: bool, expected: str
) -> None:
    from replicator.inputs.loader import InputError, load

    path = tmp_path / "replicator.yaml"
    path.write_text(
        yaml.safe_dump({"storedObjects": stored_objects, "identity": {"scim": scim}}, sort_keys=False)
    )
    with pytest.raises(InputError) as e:
        load(path)
    assert any(expected in str(p) for p in e.value.problems), [str(p) for p in e.value.problems]


def write_binding(served: Served, ws: str, prj: str, name: str, role: str, subject: dict[str, str]) -> None:
    """inventory/bindings.yaml: workspace ``ws``, its project ``prj`` and the binding ``name`` of
    ``role`` to ``subject`` (a user or group the SCIM client made)."""
    org = [
        {"apiVersion": "v1", "kind": "meshWorkspace", "metadata": {"name": ws}},
        {"apiVersion": "v1", "kind": "meshProject", "metadata": {"name": prj, "ownedByWorkspace": ws}},
        {
            "apiVersion": "v1",
            "kind": "meshProjectBinding",
            "metadata": {"ownedByWorkspace": ws, "ownedByProject": prj, "name": name},
            "spec": {"role": role, "subjects": [subject]},
        },
    ]
    (served.root / "inventory" / "bindings.yaml").write_text(yaml.safe_dump_all(org))


def test_a_deleted_user_stays_valid_for_the_bindings_that_name_it(served: Served) -> None:
    with served.http() as http:
        uid = http.post("/Users", json=entra_user("hanna@example.com")).json()["id"]
        write_binding(served, "finance", "ledger", "hanna-admin", "admin", {"user": uid})
        served.reload()  # now (the file watcher would within its interval)
        assert served.daemon.config_error is None
        assert served.daemon.validated is not None
        assert len(served.daemon.validated.inventory.bindings) == 1

        assert http.delete(f"/Users/{uid}").status_code == 204
        served.settled()
        assert served.daemon.config_error is None, "the binding still names a known (deprovisioned) user"
        assert uid not in served.inventory_users()
        assert len(served.daemon.validated.inventory.bindings) == 1


def test_search_conditional_get_and_discovery_methods(served: Served) -> None:
    with served.http() as http:
        user = http.post("/Users", json=entra_user("ivy@example.com")).json()
        group = http.post(
            "/Groups",
            json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Ivy's"},
        ).json()
        search = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "ivy" or displayName eq "Ivy\'s"',
            "attributes": ["id"],
        }
        found = http.post("/.search", json=search).json()
        assert {r["id"] for r in found["Resources"]} == {user["id"], group["id"]}
        only_users = http.post("/Users/.search", json={**search, "filter": 'userName sw "ivy"'}).json()
        assert [r["id"] for r in only_users["Resources"]] == [user["id"]]
        assert set(only_users["Resources"][0]) <= {"id", "schemas", "meta"}

        # Unfiltered, the root pages through the Users, then the Groups, reading only the page.
        more = [http.post("/Users", json=entra_user(f"ivy{n}@example.com")).json()["id"] for n in range(2)]
        listing = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}
        page = http.post("/.search", json={**listing, "startIndex": 3, "count": 2}).json()
        assert (page["totalResults"], page["itemsPerPage"]) == (4, 2)
        assert [r["id"] for r in page["Resources"]] == [more[1], group["id"]]
        first = http.post("/.search", json={**listing, "count": 1}).json()
        assert [r["id"] for r in first["Resources"]] == [user["id"]]

        same = http.get(f"/Users/{user['id']}", headers={"If-None-Match": user["meta"]["version"]})
        assert same.status_code == 304

        assert error(http.post("/Schemas", json={})) == (405, None)
        assert error(http.delete("/ResourceTypes/User")) == (405, None)
        assert error(http.get("/Schemas", params={"filter": 'id eq "x"'})) == (403, None)
        changed_id = http.put(f"/Users/{user['id']}", json=entra_user("ivy@example.com", id="other"))
        assert changed_id.status_code == 200, "a read-only id in a PUT is ignored (RFC 7644 3.5.1)"
        assert changed_id.json()["id"] == user["id"]


def test_a_group_a_file_binding_names_is_not_deleted(served: Served) -> None:
    with served.http() as http:
        gid = http.post(
            "/Groups", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Ops"}
        ).json()["id"]
        write_binding(served, "ops", "infra", "ops-reader", "reader", {"group": gid})
        served.reload()
        assert served.daemon.config_error is None
        r = http.delete(f"/Groups/{gid}")
        assert error(r) == (400, "invalidValue")
        assert gid in r.json()["detail"]
        assert http.get(f"/Groups/{gid}").status_code == 200
        assert served.store().get_object("meshUserGroup", gid) is not None


# --- two replicas ------------------------------------------------------------------------------


def test_two_replicas_creating_one_user_name_at_once_make_one_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """userName is unique per service provider; with the euid taken from another attribute only the
    SCIM layer checks it. Two daemons on one PostgreSQL store get the same new userName at the same
    moment: the check and the write happen under the store's objects lock, so one gets 201 and the
    other 409 (without the lock both passed the check before either wrote)."""
    from tests.integration.test_store import _postgres_database

    monkeypatch.setenv("SCIM_TEST_TOKEN", TOKEN)
    databases = _postgres_database()
    url = next(databases)
    try:
        config_path = write_config(tmp_path, euid_attribute="employeeNumber", state=url)
        with serve(config_path) as a, serve(config_path) as b:
            for attempt in range(4):
                name = f"twin{attempt}@example.com"
                barrier = threading.Barrier(2)
                codes: list[int] = []

                def post(
                    served: Served,
                    number: str,
                    name: str = name,
                    barrier: threading.Barrier = barrier,
                    codes: list[int] = codes,
                ) -> None:
                    body = entra_user(name, **{ENTERPRISE: {"employeeNumber": number}})
                    with served.http() as http:
                        barrier.wait(10)
                        codes.append(http.post("/Users", json=body).status_code)

                threads = [
                    threading.Thread(target=post, args=(served, f"{attempt}{i}"))
                    for i, served in enumerate((a, b))
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                assert sorted(codes) == [201, 409], (name, codes)
            names = sorted(str(r.document["userName"]) for r in a.store().scim_resources("User"))
            assert names == [f"twin{i}@example.com" for i in range(4)]
    finally:
        databases.close()


def test_one_person_s_user_name_in_other_unicode_forms_is_not_a_second_user(served: Served) -> None:
    composed = "jos\u00e9@example.com"  # é as one code point (NFC)
    with served.http() as http:
        assert http.post("/Users", json=entra_user(composed)).status_code == 201
        for twin in (
            "jose\u0301@example.com",  # e + combining acute (NFD)
            "JOS\u00c9@example.com ",  # upper case, a trailing space
            "\uff4a\uff4f\uff53\u00e9@example.com",  # fullwidth letters
        ):
            assert error(http.post("/Users", json=entra_user(twin))) == (409, "uniqueness"), twin
        assert http.post("/Users", json=entra_user("josef@example.com")).status_code == 201
    names = {str(r.document["userName"]) for r in served.store().scim_resources("User")}
    assert names == {composed, "josef@example.com"}


def test_a_create_that_fails_halfway_leaves_nothing_and_its_retry_succeeds(served: Served) -> None:
    """The SCIM resource's row cannot be written (a trigger of the database refuses it, as a
    replica dying after the meshUser was written would leave it): the meshUser is not written
    either, so the retried create is not refused for the euid an orphan holds."""
    from sqlalchemy import text

    name = "half@example.com"
    engine = served.store().engine
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse_half BEFORE INSERT ON scim_resources "
                f"WHEN json_extract(NEW.document, '$.userName') = '{name}' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        )
    with served.http() as http:
        assert error(http.post("/Users", json=entra_user(name))) == (503, None)
        users = [o for o in served.store().list_objects("meshUser", include_deprovisioned=True)]
        assert [u.key for u in users if u.document["spec"].get("euid") == name] == [], "no orphan"
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_half"))
        again = http.post("/Users", json=entra_user(name))
        assert again.status_code == 201, again.text
    assert served.inventory_users()[again.json()["id"]].spec.euid == name


def test_bodies_over_the_size_or_depth_limit_are_refused_without_a_traceback(served: Served) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs, served.http() as http:
        big = http.post("/Users", content=b" " * 2_000_000, headers={"content-type": "application/scim+json"})
        assert error(big)[0] == 413
        for levels in (40, 5_000):
            deep = b'{"userName": ' + b"[" * levels + b"]" * levels + b"}"
            r = http.post("/Users", content=deep, headers={"content-type": "application/scim+json"})
            assert error(r) == (400, "invalidSyntax"), levels
            assert "nests deeper than" in r.json()["detail"]
    assert not [e for e in logs if "exc_info" in e or e.get("log_level") == "error"], logs


def test_entra_s_manager_as_a_bare_string_is_the_manager_s_id(served: Served) -> None:
    with served.http() as http:
        boss = http.post("/Users", json=entra_user("boss@example.com")).json()["id"]
        uid = http.post("/Users", json=entra_user("worker@example.com")).json()["id"]
        path = f"{ENTERPRISE}:manager"
        for ops in (
            [{"op": "Add", "path": path, "value": boss}],  # what Entra sends
            [{"op": "replace", "value": {path: boss}}],  # path-less, the value an object
            [{"op": "replace", "path": path, "value": {"value": boss}}],  # RFC 7643 form
        ):
            unset = [{"op": "remove", "path": path}]
            http.patch(f"/Users/{uid}", json={"schemas": [PATCH], "Operations": unset})
            r = http.patch(f"/Users/{uid}", json={"schemas": [PATCH], "Operations": ops})
            assert r.status_code == 200, (ops, r.text)
            assert r.json()[ENTERPRISE]["manager"]["value"] == boss, ops
