"""How fast does one SCIM write answer when the store already holds many users? For
`scripts/bench.py --only scim_writes` (not a test).

For each size in ``BENCH_SCIM_SIZES`` (10,000 and 100,000 users), a SQLite store is filled
directly (meshUsers of source ``scim`` and their SCIM resources, plus one Group per 100 users
holding 100 of them: what an IdP's initial provisioning leaves), then a `replicator run` daemon
is started on it and one client, one request at a time, sends ``BENCH_SCIM_WRITES`` (200) of each:

- a User lookup (GET /Users?filter=userName eq "..."), as an IdP asks before it creates a user;
- a User create (POST /Users);
- a User PATCH (replace ``displayName``, ``active`` stays true);
- a Group PATCH that adds one member (how Entra ID and Okta push a membership).

Rows: p50 and p99 of each write's answer time (target: p99 under 100 ms at 10,000 and at 100,000
users), and how long the daemon took to start on the filled store.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_loop import SCIM_TOKEN, daemon, scim_site, scim_user  # scripts/ is on sys.path

Record = Callable[[str, float | None, str, str], None]
GROUP_SIZE = 100


def fill(url: str, users: int) -> list[str]:
    """``users`` SCIM users and one group per ``GROUP_SIZE`` of them into the store at ``url``, as
    the SCIM service provider keeps them; returns the groups' ids."""
    from replicator.sources.scim.resources import fold
    from state import ObjectWrite, Store

    store = Store(url)
    store.migrate()
    groups = []
    step = 5_000
    for start in range(0, users, step):
        ids = [f"u{i:06d}" for i in range(start, min(users, start + step))]
        docs = {id: scim_user(int(id[1:])) for id in ids}
        store.write_objects(
            "scim",
            puts=[
                ObjectWrite(
                    "meshUser",
                    id,
                    {
                        "kind": "meshUser",
                        "metadata": {"name": id},
                        "spec": {
                            "username": d["userName"],
                            "email": d["userName"],
                            "euid": d["userName"],
                            "givenName": "Bench",
                            "familyName": d["name"]["familyName"],
                        },
                    },
                    d["externalId"],
                )
                for id, d in docs.items()
            ],
        )
        store.put_scim_resources(
            [("User", id, d) for id, d in docs.items()],
            name_keys={("User", id): fold(d["userName"]) for id, d in docs.items()},
        )
        first = start // GROUP_SIZE
        chunk_groups = [
            (f"g{first + g:05d}", ids[g * GROUP_SIZE : (g + 1) * GROUP_SIZE])
            for g in range(len(ids) // GROUP_SIZE)
        ]
        store.write_objects(
            "scim",
            puts=[
                ObjectWrite(
                    "meshUserGroup",
                    gid,
                    {
                        "kind": "meshUserGroup",
                        "metadata": {"name": gid},
                        "spec": {"members": members, "displayName": f"Bench Group {gid}"},
                    },
                )
                for gid, members in chunk_groups
            ],
        )
        store.put_scim_resources(
            [
                (
                    "Group",
                    gid,
                    {
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": f"Bench Group {gid}",
                        "members": [{"value": m} for m in members],
                    },
                )
                for gid, members in chunk_groups
            ]
        )
        groups += [gid for gid, _ in chunk_groups]
    store.close()
    return groups


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def bench_size(record: Record, users: int, writes: int) -> None:
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = scim_site(root)
        t = time.perf_counter()
        groups = fill(f"sqlite:///{root / 'state.db'}", users)
        filled = time.perf_counter() - t
        t = time.perf_counter()
        with daemon(config, {"BENCH_SCIM_TOKEN": SCIM_TOKEN}, workers=1) as base:
            started = time.perf_counter() - t
            headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
            times: dict[str, list[float]] = {"lookup": [], "create": [], "user_patch": [], "group_patch": []}
            with httpx.Client(base_url=f"{base}/scim/v2", headers=headers, timeout=600) as http:

                def timed(what: str, method: str, path: str, body: dict[str, Any]) -> None:
                    t = time.perf_counter()
                    if method == "GET":
                        r = http.get(path, params=body)
                    else:
                        r = http.request(method, path, json=body)
                    times[what].append(time.perf_counter() - t)
                    if r.status_code not in (200, 201):
                        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")

                # The first request imports scim2-models in the daemon: not a write's cost.
                http.get("/Users", params={"count": 1}).raise_for_status()
                patch = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
                for i in range(writes):
                    # What Entra ID and Okta ask before they create a user: is this userName known?
                    name = scim_user(users + i)["userName"]
                    timed("lookup", "GET", "/Users", {"filter": f'userName eq "{name}"'})
                    timed("create", "POST", "/Users", scim_user(users + i))
                    op = {"op": "replace", "path": "displayName", "value": f"Renamed {i}"}
                    timed(
                        "user_patch",
                        "PATCH",
                        f"/Users/u{i * 37 % users:06d}",
                        {"schemas": [patch], "Operations": [op]},
                    )
                    member = f"u{(i * 7919 + 50) % users:06d}"
                    op = {"op": "add", "path": "members", "value": [{"value": member}]}
                    timed(
                        "group_patch",
                        "PATCH",
                        f"/Groups/{groups[i % len(groups)]}",
                        {"schemas": [patch], "Operations": [op]},
                    )
    size = f"{users // 1000}k"
    record(
        f"scim_{size}_startup",
        started,
        "s",
        f"daemon ready on a store of {users} SCIM users and {len(groups)} groups (filled in {filled:.0f} s)",
    )
    for what, label in (
        ("lookup", "User lookup by a userName eq filter"),
        ("create", "User create"),
        ("user_patch", "User PATCH"),
        ("group_patch", "Group PATCH adding a member"),
    ):
        values = times[what]
        record(
            f"scim_{size}_{what}_p50",
            statistics.median(values) * 1000,
            "ms",
            f"{label}, {len(values)} one at a time, {users} users stored",
        )
        record(f"scim_{size}_{what}_p99", percentile(values, 0.99) * 1000, "ms", "target < 100 ms")


def bench_scim_writes(record: Record) -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SCIM_SIZES", "10000,100000").split(",") if s]
    writes = int(os.environ.get("BENCH_SCIM_WRITES", "200"))
    for users in sizes:
        bench_size(record, users, writes)
