"""Synthetic inventories shaped like a large organisation, for `make bench` (scripts/bench_scale.py).

    python bench/generate.py --tenants 10000 --out /tmp/org      # replicator.yaml + inventory/

Seeded (the same arguments give the same files). The shape: a few landing zones on one AWS
platform; workspaces of about 20 projects, one tenant each; ``users`` people (twice the tenants by
default), each bound in several projects, the popular ones in many (a Zipf distribution);
meshUserGroups whose sizes follow a Zipf distribution too, bound like users; ten
meshProjectBindings per project (one subject each: a user, or a group one time in ten), so
100,000 tenants have 1,000,000 bindings. The inventory is split into files of at most 1,000
projects, as a repository of access definitions would be."""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROLES = ("admin", "user", "reader")
ZONES = ("lz-prod", "lz-dev", "lz-sandbox")
BINDINGS_PER_PROJECT = 10
PROJECTS_PER_WORKSPACE = 20
PROJECTS_PER_FILE = 1_000
PLATFORM = "aws.bench"


def zipf_pick(rng: random.Random, n: int, s: float = 1.1) -> Iterator[int]:
    """Indexes in ``range(n)``, index ``k`` about ``1 / (k+1)**s`` as often as index 0, for ever."""
    weights = [1.0 / (k + 1) ** s for k in range(n)]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    import bisect

    while True:
        yield min(n - 1, bisect.bisect(cumulative, rng.random() * total))


def generate(out: Path, tenants: int, users: int | None = None, seed: int = 7) -> Path:
    """Write ``out/replicator.yaml`` and ``out/inventory/*.yaml``; returns the config's path."""
    rng = random.Random(seed)
    users = users if users is not None else 2 * tenants
    groups = max(1, tenants // 50)
    inventory = out / "inventory"
    inventory.mkdir(parents=True, exist_ok=True)
    # People are shuffled before the Zipf ranks, so popularity does not follow the names.
    people = list(range(users))
    rng.shuffle(people)
    pick_user = zipf_pick(rng, users)
    pick_group = zipf_pick(rng, groups)
    _dump(
        inventory / "users.yaml",
        (
            {
                "kind": "meshUser",
                "metadata": {"name": f"u{i:06d}"},
                "spec": {"username": f"user{i}", "email": f"user{i}@example.com", "euid": f"user{i}"},
            }
            for i in range(users)
        ),
    )
    size_rank = zipf_pick(rng, 200)

    def members(size: int) -> list[str]:
        return sorted({f"u{people[next(pick_user)]:06d}" for _ in range(size)})

    _dump(
        inventory / "groups.yaml",
        (
            {
                "kind": "meshUserGroup",
                "metadata": {"name": f"g{g:05d}"},
                "spec": {"members": members(next(size_rank) + 1)},
            }
            for g in range(groups)
        ),
    )
    for first in range(0, tenants, PROJECTS_PER_FILE):
        docs: list[dict[str, Any]] = []
        for t in range(first, min(tenants, first + PROJECTS_PER_FILE)):
            ws, prj = f"ws{t // PROJECTS_PER_WORKSPACE:05d}", f"p{t:06d}"
            if t % PROJECTS_PER_WORKSPACE == 0:
                tags = {"bu": f"bu{t % 7}"}
                docs.append({"kind": "meshWorkspace", "metadata": {"name": ws}, "spec": {"tags": tags}})
            docs.append({"kind": "meshProject", "metadata": {"name": prj, "ownedByWorkspace": ws},
                         "spec": {"tags": {"costCenter": str(1000 + t % 97)}}})  # fmt: skip
            docs.append(
                {
                    "kind": "meshTenant",
                    "metadata": {
                        "ownedByWorkspace": ws,
                        "ownedByProject": prj,
                        "platformIdentifier": PLATFORM,
                    },
                    "spec": {
                        "localId": str(100_000_000_000 + t),
                        "landingZoneIdentifier": ZONES[t % len(ZONES)],
                    },
                }
            )
            seen: set[tuple[str, str]] = set()
            while len(seen) < BINDINGS_PER_PROJECT:
                role = ROLES[0] if not seen else rng.choice(ROLES[1:]) if rng.random() < 0.8 else ROLES[0]
                if rng.random() < 0.1:
                    subject = {"group": f"g{next(pick_group):05d}"}
                else:
                    subject = {"user": f"u{people[next(pick_user)]:06d}"}
                key = (role, next(iter(subject.values())))
                if key in seen:
                    continue
                seen.add(key)
                docs.append(
                    {
                        "kind": "meshProjectBinding",
                        "metadata": {"name": f"b{len(seen)}", "ownedByWorkspace": ws, "ownedByProject": prj},
                        "spec": {"role": role, "subjects": [subject]},
                    }
                )
        _dump(inventory / f"org-{first // PROJECTS_PER_FILE:04d}.yaml", iter(docs))
    arn = "arn:aws:sso:::permissionSet/ssoins-1/ps-{}"
    config = {
        "state": "sqlite:///state.db",
        "inventory": ["inventory"],
        "platforms": [
            {
                "identifier": PLATFORM,
                "type": "aws",
                "euidPattern": "%s@example.com",
                "userGroupNamePattern": "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}",
                "aws": {
                    "region": "eu-central-1",
                    "identityStoreId": "d-1234567890",
                    "instanceArn": "arn:aws:sso:::instance/ssoins-1",
                    "endpointUrl": "http://127.0.0.1:9",
                },
            }
        ],
        "landingZones": [
            {
                "identifier": zone,
                "platform": PLATFORM,
                "roleMappings": {
                    r: {"platformGroupAlias": r, "platformRoles": [arn.format(r)]} for r in ROLES
                },
            }
            for zone in ZONES
        ],
    }
    path = out / "replicator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _dump(path: Path, docs: Iterator[dict[str, Any]]) -> None:
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w") as f:
        yaml.dump_all(({"apiVersion": "v1", **d} for d in docs), f, Dumper=dumper, sort_keys=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--users", type=int, default=None, help="default: twice the tenants")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(generate(args.out, args.tenants, args.users, args.seed))


if __name__ == "__main__":
    main()
