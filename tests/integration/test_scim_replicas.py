"""SCIM on two daemons sharing one PostgreSQL store, as an IdP's provisioning client meets a
replicated deployment: its requests land on either replica, many at once. A read-modify-write
(PATCH, PUT, DELETE) reads the resource under the same lock as its write, so no replica writes
over what the other changed meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.scim_served import PATCH, TOKEN, Served, entra_user, serve, write_config

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
N = 50


def at_once(calls: list[Callable[[], int]]) -> list[int]:
    """Run every call in a thread of its own, all released together; their status codes."""
    barrier = threading.Barrier(len(calls))
    codes: list[int] = []
    lock = threading.Lock()

    def run(call: Callable[[], int]) -> None:
        barrier.wait(30)
        code = call()
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return codes


def member_op(served: Served, gid: str, op: str, uid: str) -> Callable[[], int]:
    def call() -> int:
        body = {"schemas": [PATCH], "Operations": [{"op": op, "path": "members", "value": [{"value": uid}]}]}
        if op == "remove":
            body = {"schemas": [PATCH], "Operations": [{"op": op, "path": f'members[value eq "{uid}"]'}]}
        with served.http() as http:
            return http.patch(f"/Groups/{gid}", json=body).status_code

    return call


def test_concurrent_member_patches_on_two_replicas_lose_no_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_store import _postgres_database

    monkeypatch.setenv("SCIM_TEST_TOKEN", TOKEN)
    databases = _postgres_database()
    url = next(databases)
    try:
        config_path = write_config(tmp_path, state=url)
        with serve(config_path) as a, serve(config_path) as b:
            with a.http() as http:
                made = [http.post("/Users", json=entra_user(f"m{i}@example.com")) for i in range(N)]
                uids = [r.json()["id"] for r in made]
                gid = http.post("/Groups", json={"schemas": [GROUP], "displayName": "Crowd"}).json()["id"]
            replicas = (a, b)

            def members() -> tuple[set[str], set[str]]:
                with a.http() as http:
                    scim = {m["value"] for m in http.get(f"/Groups/{gid}").json().get("members", [])}
                mesh = a.store().get_object("meshUserGroup", gid)
                assert mesh is not None
                spec = mesh.document.get("spec")
                assert isinstance(spec, dict)
                return scim, set(spec.get("members") or [])

            adds = at_once([member_op(replicas[i % 2], gid, "add", uid) for i, uid in enumerate(uids)])
            assert adds == [200] * N
            assert members() == (set(uids), set(uids)), "every add kept, in SCIM and in the meshUserGroup"

            removes = at_once([member_op(replicas[i % 2], gid, "remove", uid) for i, uid in enumerate(uids)])
            assert removes == [200] * N
            assert members() == (set(), set()), "every remove kept: nobody keeps access"
    finally:
        databases.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_values_over_the_length_limits_are_400_on_both_stores_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from tests.integration.test_store import _postgres_database
    from tests.support.scim_served import error

    monkeypatch.setenv("SCIM_TEST_TOKEN", TOKEN)
    databases = _postgres_database() if backend == "postgresql" else None
    url = next(databases) if databases is not None else "sqlite:///state.db"
    try:
        with serve(write_config(tmp_path, state=url)) as served, served.http() as http:
            too_long = [
                entra_user("long-external@example.com", externalId="x" * 1025),
                entra_user("u" * 250 + "@example.com"),  # userName over 256 characters
            ]
            for body in too_long:
                r = http.post("/Users", json=body)
                assert error(r) == (400, "invalidValue"), r.text
            assert served.store().list_objects("meshUser") == []
            assert served.store().scim_resources("User") == []
            fits = http.post("/Users", json=entra_user("fits@example.com", externalId="x" * 1024))
            assert fits.status_code == 201, fits.text
    finally:
        if databases is not None:
            databases.close()
