"""Okta's provisioning client, as its SCIM 2.0 reference documents its requests
(developer.okta.com, "Okta and SCIM Version 2.0": create after a ``userName eq`` lookup, user
updates by PUT, deactivation by a path-less PATCH, group renames by a path-less ``replace`` whose
value also carries the group's ``id``, member pushes by ``add``/``remove`` on ``members`` with a
``value`` array or a filtered path, and a full member push by ``replace``)."""

from __future__ import annotations

from typing import Any

from tests.support.scim_served import PATCH, Served


def _patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def okta_user(name: str, **extra: Any) -> dict[str, Any]:
    """A User as Okta creates it (its default attribute mapping)."""
    first, _, domain = name.partition("@")
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": first.title(), "familyName": domain.split(".")[0].title()},
        "emails": [{"primary": True, "value": name, "type": "work"}],
        "displayName": first.title(),
        "locale": "en-US",
        "externalId": f"00u{first}",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
        **extra,
    }


def test_okta_s_documented_requests(served: Served) -> None:
    with served.http() as http:
        lookup = http.get(
            "/Users", params={"filter": 'userName eq "kim@example.com"', "startIndex": 1, "count": 100}
        )
        assert lookup.json()["totalResults"] == 0
        r = http.post("/Users", json=okta_user("kim@example.com"))
        assert r.status_code == 201, r.text
        kim = r.json()["id"]
        assert "password" not in r.json()
        lee = http.post("/Users", json=okta_user("lee@example.com")).json()["id"]
        found = http.get(
            "/Users", params={"filter": 'userName eq "kim@example.com"', "startIndex": 1, "count": 100}
        )
        assert [u["id"] for u in found.json()["Resources"]] == [kim]

        # profile update: a PUT of the whole user, with its id
        changed = http.put(
            f"/Users/{kim}", json={**okta_user("kim@example.com"), "id": kim, "displayName": "Kimberly"}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["displayName"] == "Kimberly"

        group = http.post(
            "/Groups",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Okta Admins",
                "members": [],
            },
        )
        assert group.status_code == 201, group.text
        gid = group.json()["id"]
        add = _patch(
            {
                "op": "add",
                "path": "members",
                "value": [
                    {"value": kim, "display": "kim@example.com"},
                    {"value": lee, "display": "lee@example.com"},
                ],
            }
        )
        r = http.patch(f"/Groups/{gid}", json=add)
        assert r.status_code == 200, r.text
        rename = _patch({"op": "replace", "value": {"id": gid, "displayName": "Okta Administrators"}})
        r = http.patch(f"/Groups/{gid}", json=rename)
        assert r.status_code == 200, r.text
        assert r.json()["displayName"] == "Okta Administrators"
        remove = _patch({"op": "remove", "path": f'members[value eq "{lee}"]'})
        r = http.patch(f"/Groups/{gid}", json=remove)
        assert r.status_code == 200, r.text
        push = _patch(
            {"op": "replace", "path": "members", "value": [{"value": lee, "display": "lee@example.com"}]}
        )
        r = http.patch(f"/Groups/{gid}", json=push)
        assert r.status_code == 200, r.text
        assert [m["value"] for m in r.json()["members"]] == [lee]

        served.settled()
        assert served.daemon.validated is not None
        group_now = served.daemon.validated.inventory.groups[gid]
        assert (group_now.spec.display_name, group_now.spec.members) == ("Okta Administrators", (lee,))

        deactivate = _patch({"op": "replace", "value": {"active": False}})
        r = http.patch(f"/Users/{lee}", json=deactivate)
        assert r.status_code == 200, r.text
        assert r.json()["active"] is False
    lee_stored = served.store().get_object("meshUser", lee)
    assert lee_stored is not None
    assert lee_stored.deprovisioned_at is not None, "a deactivated user is deprovisioned"
