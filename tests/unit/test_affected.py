"""touched_tenants: every tenant whose desired state a change of the inventory changes is among
the touched ones (the daemon compiles only those), and a change far from a tenant does not
touch it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from replicator.core.affected import touched_tenants
from replicator.core.compile import compile_all
from replicator.core.inventory import Inventory, MeshUserGroup, MeshWorkspace
from tests.unit.test_compile import CAPS, NOW, PLATFORM, binding, make_config, project, tenant, ugroup, user

CONFIG = make_config(pattern="#{workspaceIdentifier}.#{projectIdentifier}.#{tagTeam}-#{platformGroupAlias}")
USERS = [f"u{i}" for i in range(8)]
PROJECTS = [("ws0", "p0"), ("ws0", "p1"), ("ws1", "p2"), ("ws1", "p3"), ("ws2", "p4")]


def workspace(name: str, team: str) -> MeshWorkspace:
    return MeshWorkspace.model_validate(
        {"kind": "meshWorkspace", "metadata": {"name": name}, "spec": {"tags": {"team": team}}}
    )


def random_inventory(rng: random.Random) -> Inventory:
    groups = [ugroup(f"g{i}", *rng.sample(USERS, rng.randint(0, 3))) for i in range(3)]
    bindings = []
    for ws, prj in PROJECTS:
        for n in range(rng.randint(0, 3)):
            subject = (
                {"group": rng.choice(groups).metadata.name}
                if rng.random() < 0.3
                else {"user": rng.choice(USERS)}
            )
            bindings.append(binding(rng.choice(["admin", "user"]), subject, name=f"b{n}", ws=ws, project=prj))
    return Inventory(
        users={u: user(u, f"{u}@x") for u in USERS},
        groups={g.metadata.name: g for g in groups},
        workspaces={w: workspace(w, rng.choice(["red", "blue"])) for w in ("ws0", "ws1", "ws2")},
        projects={(w, p): project(w, p) for w, p in PROJECTS},
        bindings=tuple(bindings),
        tenants={
            t.key: t
            for t in (tenant(w, p, local_id=f"{i:012d}") for i, (w, p) in enumerate(PROJECTS) if i != 3)
        },
    )


def mutate(inv: Inventory, rng: random.Random) -> Inventory:
    """One change of one kind of object, as an edit of one inventory file would make."""
    kind = rng.choice(["user", "group", "binding", "binding_moved", "workspace", "tenant", "project_tenant"])
    changes: dict[str, Any] = {}
    if kind == "user":
        name = rng.choice(USERS)
        changes["users"] = {**inv.users, name: user(name, f"{name}-{rng.randint(0, 9)}@x")}
    elif kind == "group":
        g = rng.choice(list(inv.groups))
        changes["groups"] = {**inv.groups, g: ugroup(g, *rng.sample(USERS, rng.randint(0, 3)))}
    elif kind in ("binding", "binding_moved") and inv.bindings:
        i = rng.randrange(len(inv.bindings))
        b = inv.bindings[i]
        ws, prj = (
            rng.choice(PROJECTS)
            if kind == "binding_moved"
            else (b.metadata.owned_by_workspace, b.metadata.owned_by_project)
        )
        new = binding(
            "admin" if b.spec.role == "user" else "user",
            {"user": rng.choice(USERS)},
            name=b.metadata.name,
            ws=ws,
            project=prj,
        )
        changes["bindings"] = (*inv.bindings[:i], new, *inv.bindings[i + 1 :])
    elif kind == "workspace":
        w = rng.choice(list(inv.workspaces))
        changes["workspaces"] = {**inv.workspaces, w: workspace(w, rng.choice(["green", "red"]))}
    elif kind == "tenant":
        key = rng.choice(list(inv.tenants))
        changes["tenants"] = {k: v for k, v in inv.tenants.items() if k != key}
    else:  # a project gains its tenant, or changes its tenant's account
        w, p = PROJECTS[3]
        changes["tenants"] = {
            **inv.tenants,
            f"{w}/{p}/{PLATFORM}": tenant(w, p, local_id=f"{rng.randint(0, 9):012d}"),
        }
    return inv.model_copy(update=changes)


def compiled(inv: Inventory) -> dict[str, Any]:
    return compile_all(CONFIG, inv, {PLATFORM: CAPS}, NOW)


@pytest.mark.parametrize("seed", range(300))
def test_every_changed_tenant_is_touched(seed: int) -> None:
    rng = random.Random(seed)
    old = random_inventory(rng)
    old.bindings_by_project, old.projects_by_subject, old.groups_by_member, old.tenants_by_project  # noqa: B018
    new = old  # (the old inventory's indexes are built, as the daemon's are: a copy must not keep them)
    for _ in range(rng.randint(1, 2)):
        new = mutate(new, rng)
    before, after = compiled(old), compiled(new)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= touched_tenants(old, new)
    # told which objects may differ (those not in both, as of the files that changed)
    kept = {id(o) for o in objects(old)} & {id(o) for o in objects(new)}
    suspects = [o for o in (*objects(old), *objects(new)) if id(o) not in kept]
    assert changed <= touched_tenants(old, new, suspects)
    assert touched_tenants(old, new, suspects) <= touched_tenants(old, new)


def objects(inv: Inventory) -> list[Any]:
    return [*inv.users.values(), *inv.groups.values(), *inv.workspaces.values(), *inv.projects.values(),
            *inv.bindings, *inv.tenants.values()]  # fmt: skip


def test_a_change_touches_only_the_tenants_it_reaches() -> None:
    rng = random.Random(1)
    old = random_inventory(rng)
    old = old.model_copy(
        update={
            "bindings": (
                binding("admin", {"user": "u0"}, name="only", ws="ws0", project="p0"),
                binding("user", {"group": "team"}, name="team", ws="ws1", project="p2"),
            ),
            "groups": {"team": ugroup("team", "u1")},
        }
    )
    old.bindings_by_project, old.projects_by_subject, old.groups_by_member, old.tenants_by_project  # noqa: B018
    t0, t2, t4 = (f"{w}/{p}/{PLATFORM}" for w, p in (PROJECTS[0], PROJECTS[2], PROJECTS[4]))
    assert touched_tenants(old, old) == set()
    assert touched_tenants(
        old, old.model_copy(update={"users": {**old.users, "u0": user("u0", "new@x")}})
    ) == {t0}
    assert touched_tenants(
        old, old.model_copy(update={"users": {**old.users, "u1": user("u1", "new@x")}})
    ) == {t2}
    assert (
        touched_tenants(old, old.model_copy(update={"users": {**old.users, "u7": user("u7", "new@x")}}))
        == set()
    )
    group: MeshUserGroup = ugroup("team", "u1", "u2")
    assert touched_tenants(old, old.model_copy(update={"groups": {"team": group}})) == {t2}
    moved = (old.bindings[0], binding("user", {"group": "team"}, name="team", ws="ws2", project="p4"))
    assert touched_tenants(old, old.model_copy(update={"bindings": moved})) == {t2, t4}
    ws = {**old.workspaces, "ws2": workspace("ws2", "green")}
    assert touched_tenants(old, old.model_copy(update={"workspaces": ws})) == {t4}
