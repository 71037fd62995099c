"""A small local server speaking the Google JSON the GCP driver uses, for tests and demos.

No emulator exists for Cloud Identity, the Admin SDK or Resource Manager, so this server
implements exactly the documented calls ``platforms.gcp`` makes, with their wire format:

* Cloud Identity v1: ``groups.create`` (an ``Operation``, done unless ``slow_creates`` says
  otherwise; 409 ALREADY_EXISTS on a taken email; ``initialGroupConfig`` as documented),
  ``groups.lookup``, ``groups.get``, ``groups.list`` (``parent=customers/<id>``;
  ``view`` BASIC, the default, or FULL; ``pageSize`` at most 1000 for BASIC and 500 for FULL, 400
  INVALID_ARGUMENT above, default 200 / 50; ``pageToken``/``nextPageToken``), ``groups.delete``,
  ``groups.memberships.list`` (``pageSize``/``nextPageToken``), ``.create`` (409 on a
  duplicate), ``.lookup``, ``.delete``.
* Admin SDK directory_v1: ``users.get`` (primary email or alias, case-insensitive; 404; 403 for
  an email outside the customer's domains),
  ``users.list`` (``customer``, ``query`` with ``email:`` / ``externalId:``, ``maxResults``,
  ``pageToken``; no ``users`` key when nothing matched).
* Resource Manager v3: ``projects.getIamPolicy`` / ``projects.setIamPolicy`` with etags (409
  ABORTED on a stale etag), principals and roles checked (400), conditions only at version 3.
  Deleting a group rewrites its bindings to ``deleted:group:...?uid=`` as Google does. A group
  created through the API is unknown to IAM for ``iam_lag`` seconds (400 "Group <email> does not
  exist.").

What the real service does that a naive fake would hide is modelled on purpose, each with its
source: see "How the real service behaves" in docs/gcp.md and the comments at ``World``.

* OAuth 2.0: ``POST /token`` (the JWT bearer grant of service account keys) and ``POST /sts``
  (the token exchange of workload identity federation); claims are recorded in ``tokens``, the
  ``Authorization`` header of every API request in ``authorizations``.

Every request is logged in ``requests`` (method, path); ``watch(fn)`` sees each one before it is
served (to check what state a step found, e.g. make-before-break). Tests set state directly (``add_user``,
``add_project``, ``add_group``, ``set_policy``) and read it back the same way, never through the
driver. ``interfere(project, fn)`` changes a policy right before the next ``setIamPolicy`` of
that project (a concurrent edit between the driver's get and set); ``fail_next`` injects an error.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.local_server import WorldServer

CUSTOMER = "C0test123"
DOMAIN = "example.com"
PREDEFINED_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/browser",
        "roles/storage.admin",
        "roles/iam.securityReviewer",
    }
)


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        status: str,
        message: str,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
        domain: str = "usageLimits",
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message
        self.headers = headers or {}
        self.reason, self.domain = reason, domain

    def body(self) -> bytes:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.status:  # the Admin SDK's errors carry no status, only errors[].reason
            err["status"] = self.status
        if self.reason:
            err["errors"] = [{"message": self.message, "domain": self.domain, "reason": self.reason}]
        return json.dumps({"error": err}).encode()


@dataclass
class Fault:
    path_pattern: str
    code: int
    status: str
    retry_after: str | None = None
    reason: str | None = None


@dataclass
class World:
    """The server's state; every access holds ``lock``."""

    customer: str = CUSTOMER
    domain: str = DOMAIN
    lock: threading.RLock = field(default_factory=threading.RLock)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    memberships: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    users: list[dict[str, Any]] = field(default_factory=list)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_roles: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    membership_page_max: int = 1000
    group_page_max: int = 1000
    """At most this many groups a ``groups.list`` page holds, whatever ``pageSize`` asked (Google
    may answer with fewer than asked); tests lower it to make pages without 500 groups."""
    user_page_max: int = 500
    faults: list[Fault] = field(default_factory=list)
    interference: dict[str, list[Callable[[dict[str, Any]], None]]] = field(default_factory=dict)
    watchers: list[Callable[[str, str], None]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    """Claims of every JWT assertion exchanged at ``/token`` (service account credentials)."""
    authorizations: list[tuple[str, str]] = field(default_factory=list)
    """(path, Authorization header) of every API request."""
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    # --- what the real service does after a write, and who may see what ---
    iam_lag: float = 0.0
    """Seconds a group created through ``groups.create`` stays unknown to IAM: until then a
    ``setIamPolicy`` naming it answers 400 INVALID_ARGUMENT "Group <email> does not exist.",
    exactly what it answers for a group that does not exist at all. Real reports: Terraform runs
    that create Cloud Identity groups and bind them at once fail this way and succeed when re-run
    minutes later (GoogleCloudPlatform/pbmm-on-gcp-onboarding#432 and #443, "wait 5 min to
    restart"; cloud-foundation-fabric#1549; terraform-example-foundation#959, groups "Creation
    complete" then the binding refused); GoogleCloudPlatform/solution-acceleration-toolkit#773
    added a sleep between group creation and IAM bindings (5 s was flaky, 15 s chosen). How long
    the lag lasts is not documented; the e2e tests use a short one."""
    iam_known_from: dict[str, float] = field(default_factory=dict)
    """Group resource name -> the ``time.monotonic()`` instant from which IAM knows it (groups
    made with ``add_group`` are known at once)."""
    slow_creates: int = 0
    """The next this many ``groups.create`` answer an ``Operation`` with ``done: false`` (the
    documented long-running form: "If the value is false, it means the operation is still in
    progress", Operation in the Cloud Identity v1 reference); Cloud Identity v1 has no
    ``operations.get`` to poll. Such a group is invisible (lookup, get, list: 404 / absent) for
    ``create_delay`` seconds, yet its email is taken (a second create: 409 ALREADY_EXISTS). How
    often Google really answers done:false is not documented; this models the worst case."""
    create_delay: float = 0.0
    creating: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    """Group resource name -> (the group, the monotonic instant it becomes visible)."""
    secondary_domains: tuple[str, ...] = ()
    """More domains of the customer besides ``domain``. ``users.get`` of an email in any other
    domain answers 403 "Not Authorized to access this resource/api" (reason forbidden), not 404:
    an admin can only administer the customer's own domains (GAM-team/GAM#461), and the Admin
    SDK gives this very body for a missing permission too (googlecloudcommunity "Admin SDK API
    Returning Status Code 403"; taers232c/GAMADV-XTD3#462: a service account admin is told "Not
    Authorized" where a super admin is told "Does not exist"). Whether Google also answers 403 for
    every unknown user of one's own domain depends on the caller; here it answers 404."""
    caller: str = "replicator@replicator-test.iam.gserviceaccount.com"
    """Who the (anonymous) requests act as: the initial owner ``WITH_INITIAL_OWNER`` adds."""
    caller_is_groups_admin: bool = True
    """``initialGroupConfig=EMPTY`` "can only be used by admins of the domain" (Cloud Identity v1
    groups.create, InitialGroupConfig; the how-to "Creating and searching for Google Groups": only
    a Super Admin or Groups Admin); otherwise 403 PERMISSION_DENIED (the message is the one
    googleapis/google-api-go-client#637 shows for an actor without the right to create groups)."""


def _page(items: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    end = start + size
    nxt = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
    return items[start:end], nxt


def _etag(n: int) -> str:
    return base64.b64encode(f"etag-{n}".encode()).decode()


class GcpServer(WorldServer[World]):
    """One server on 127.0.0.1 (a free port) serving all three APIs at ``url``."""

    thread_name = "gcp-server"
    url_suffix = "/"

    def __init__(self, iam_lag: float = 0.0) -> None:
        """``iam_lag``: seconds a new group stays unknown to IAM (kept across ``reset``)."""
        super().__init__(lambda: World(iam_lag=iam_lag), _Handler)

    def catch_up(self) -> None:
        """The service has caught up with every write: every group being created is there, every
        group is known to IAM (what waiting out the lag would do, without the wait)."""
        with self.world.lock:
            self.world.iam_known_from.clear()
            for name, (group, _) in list(self.world.creating.items()):
                self.world.creating[name] = (group, 0.0)
            _promote(self.world)

    def driver_options(self, **extra: Any) -> dict[str, Any]:
        """The ``gcp:`` block pointing the driver at this server (anonymous credentials)."""
        return {
            "customerId": self.world.customer,
            "domain": self.world.domain,
            "anonymous": True,
            "endpoints": {"cloudidentity": self.url, "admin": self.url, "cloudresourcemanager": self.url},
            "timeout": 10,
            **extra,
        }

    # --- arranging state ------------------------------------------------------------------------

    def add_user(self, email: str, external_ids: tuple[str, ...] = (), aliases: tuple[str, ...] = ()) -> str:
        with self.world.lock:
            uid = str(next(self.world.ids))
            self.world.users.append(
                {
                    "kind": "admin#directory#user",
                    "id": uid,
                    "primaryEmail": email.lower(),  # Google lowercases user names
                    "aliases": list(aliases),
                    "customerId": self.world.customer,
                    "externalIds": [{"value": v, "type": "organization"} for v in external_ids],
                    "name": {"fullName": email.partition("@")[0]},
                }
            )
            return uid

    def add_project(self, project: str, bindings: list[dict[str, Any]] | None = None) -> None:
        with self.world.lock:
            self.world.policies[project] = {"version": 1, "etag": _etag(next(self.world.ids)), "bindings": []}
            if bindings:
                self.world.policies[project]["bindings"] = json.loads(json.dumps(bindings))

    def add_custom_role(self, role: str) -> None:
        with self.world.lock:
            self.world.custom_roles.add(role)

    def add_group(self, email: str, description: str = "", members: tuple[str, ...] = ()) -> str:
        """A group made outside the replicator (by hand, or another tool)."""
        with self.world.lock:
            name = _create_group(
                self.world,
                {
                    "groupKey": {"id": email},
                    "parent": f"customers/{self.world.customer}",
                    "displayName": email.partition("@")[0],
                    "description": description,
                    "labels": {"cloudidentity.googleapis.com/groups.discussion_forum": ""},
                },
            )
            for m in members:
                _create_membership(
                    self.world, name, {"preferredMemberKey": {"id": m}, "roles": [{"name": "MEMBER"}]}
                )
            return name

    def add_member(self, group_email: str, member: str) -> None:
        with self.world.lock:
            _create_membership(
                self.world,
                self.group_id(group_email),
                {"preferredMemberKey": {"id": member}, "roles": [{"name": "MEMBER"}]},
            )

    def interfere(self, project: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Change ``project``'s policy (and its etag) right before its next setIamPolicy is read."""
        with self.world.lock:
            self.world.interference.setdefault(project, []).append(change)

    def watch(self, fn: Callable[[str, str], None]) -> None:
        """Call ``fn(method, path)`` before each request is served (the world is locked: ``fn`` may
        read it through this object's helpers)."""
        with self.world.lock:
            self.world.watchers.append(fn)

    def fail_next(
        self,
        path_pattern: str,
        code: int,
        status: str,
        retry_after: str | None = None,
        reason: str | None = None,
    ) -> None:
        """The next request whose path matches ``path_pattern`` fails with this Google error."""
        with self.world.lock:
            self.world.faults.append(Fault(path_pattern, code, status, retry_after, reason))

    # --- reading state back ---------------------------------------------------------------------

    def groups(self) -> dict[str, dict[str, Any]]:
        """Group email -> the stored group (those still being created: ``being_created``)."""
        with self.world.lock:
            _promote(self.world)
            return {g["groupKey"]["id"]: json.loads(json.dumps(g)) for g in self.world.groups.values()}

    def being_created(self) -> list[str]:
        """Emails of groups whose create answered done:false and that are not visible yet."""
        with self.world.lock:
            _promote(self.world)
            return sorted(g["groupKey"]["id"] for g, _ in self.world.creating.values())

    def group_id(self, email: str) -> str:
        return str(self.groups()[email]["name"])

    def members(self, group_email: str) -> list[str]:
        with self.world.lock:
            gid = self.group_id(group_email)
            return sorted(m["preferredMemberKey"]["id"] for m in self.world.memberships.get(gid, {}).values())

    def policy(self, project: str) -> dict[str, Any]:
        with self.world.lock:
            copied: dict[str, Any] = json.loads(json.dumps(self.world.policies[project]))
            return copied

    def set_policy(self, project: str, bindings: list[dict[str, Any]]) -> None:
        with self.world.lock:
            policy = self.world.policies[project]
            policy["bindings"] = json.loads(json.dumps(bindings))
            policy["etag"] = _etag(next(self.world.ids))
            if any(b.get("condition") for b in bindings):
                policy["version"] = 3

    def roles_of(self, project: str, member: str) -> list[str]:
        """Roles of unconditional bindings naming ``member`` (e.g. ``group:x@example.com``)."""
        return sorted(
            b["role"]
            for b in self.policy(project)["bindings"]
            if member in b["members"] and not b.get("condition")
        )

    def calls(self, method: str, path_regex: str) -> int:
        with self.world.lock:
            return sum(1 for m, p in self.world.requests if m == method and re.search(path_regex, p))


# --- the APIs -------------------------------------------------------------------------------------


def _user_by_key(world: World, key: str) -> dict[str, Any] | None:
    k = key.casefold()
    for u in world.users:
        if u["id"] == key or u["primaryEmail"].casefold() == k or k in (a.casefold() for a in u["aliases"]):
            return u
    return None


def _group_by_email(world: World, email: str) -> dict[str, Any] | None:
    e = email.casefold()
    return next((g for g in world.groups.values() if g["groupKey"]["id"].casefold() == e), None)


def _create_group(world: World, body: dict[str, Any]) -> str:
    email = str((body.get("groupKey") or {}).get("id") or "")
    if not email or "@" not in email:
        raise ApiError(400, "INVALID_ARGUMENT", "groupKey.id must be an email address")
    if body.get("parent") != f"customers/{world.customer}":
        raise ApiError(403, "PERMISSION_DENIED", f"the caller cannot create groups in {body.get('parent')}")
    if email.partition("@")[2].lower() != world.domain:
        raise ApiError(400, "INVALID_ARGUMENT", f"{email} is not in a domain of the customer")
    labels = body.get("labels") or {}
    allowed = {
        "cloudidentity.googleapis.com/groups.discussion_forum",
        "cloudidentity.googleapis.com/groups.security",
        "cloudidentity.googleapis.com/groups.locked",
    }
    if not labels or set(labels) - allowed or any(v != "" for v in labels.values()):
        raise ApiError(400, "INVALID_ARGUMENT", "labels: only the documented keys with empty values")
    if len(str(body.get("description") or "")) > 4096:
        raise ApiError(400, "INVALID_ARGUMENT", "description is longer than 4096 characters")
    being_created = any(g["groupKey"]["id"] == email.lower() for g, _ in world.creating.values())
    if being_created or _group_by_email(world, email) is not None or _user_by_key(world, email) is not None:
        raise ApiError(409, "ALREADY_EXISTS", "Error(4003): Entity already exists.")
    name = f"groups/0{next(world.ids):x}gcp"
    world.groups[name] = {
        "name": name,
        "groupKey": {"id": email.lower()},
        "parent": body["parent"],
        "displayName": body.get("displayName") or "",
        "description": body.get("description") or "",
        "labels": dict(labels),
        "createTime": "2026-01-01T00:00:00Z",
        "updateTime": "2026-01-01T00:00:00Z",
    }
    world.memberships[name] = {}
    return name


def _create_group_call(world: World, body: dict[str, Any], config: str) -> dict[str, Any]:
    """``groups.create`` as the API answers it: the Operation, the lag of IAM and of slow creates."""
    if config not in ("WITH_INITIAL_OWNER", "EMPTY"):
        # v1 documents the parameter as optional with INITIAL_GROUP_CONFIG_UNSPECIFIED "Default.
        # Should not be used." (v1beta1: "Required"). What v1 does without it is not documented;
        # this server refuses it, as v1beta1 does, so a driver must choose.
        raise ApiError(400, "INVALID_ARGUMENT", "initialGroupConfig must be WITH_INITIAL_OWNER or EMPTY")
    email = str((body.get("groupKey") or {}).get("id") or "")
    if config == "EMPTY" and not world.caller_is_groups_admin:
        raise ApiError(
            403,
            "PERMISSION_DENIED",
            f"Error(2015): Actor does not have permission to create group '{email}'.",
        )
    name = _create_group(world, body)
    if config == "WITH_INITIAL_OWNER":  # "the end user making the request will be added as the initial owner"
        row = {
            "name": f"{name}/memberships/{next(world.ids)}",
            "preferredMemberKey": {"id": world.caller},
            "roles": [{"name": "MEMBER"}, {"name": "OWNER"}],
            "type": "SERVICE_ACCOUNT",
        }
        world.memberships[name][world.caller] = row
    now = time.monotonic()
    group = world.groups[name]
    if world.slow_creates > 0:
        world.slow_creates -= 1
        visible = now + world.create_delay
        world.creating[name] = (world.groups.pop(name), visible)
        world.iam_known_from[name] = visible + world.iam_lag
        return {"name": f"operations/{name.split('/')[1]}", "done": False}
    if world.iam_lag > 0:
        world.iam_known_from[name] = now + world.iam_lag
    return _operation(group, "google.apps.cloudidentity.groups.v1.Group")


def _promote(world: World) -> None:
    """Groups whose slow create has finished become visible."""
    now = time.monotonic()
    for name, (group, visible) in list(world.creating.items()):
        if visible <= now:
            del world.creating[name]
            world.groups[name] = group


def _create_membership(world: World, group: str, body: dict[str, Any]) -> dict[str, Any]:
    if group not in world.groups:
        raise ApiError(404, "NOT_FOUND", "Error(2028): Group not found")
    key = str((body.get("preferredMemberKey") or {}).get("id") or "")
    user = _user_by_key(world, key)
    nested = _group_by_email(world, key)
    if user is None and nested is None:
        raise ApiError(404, "NOT_FOUND", f"Error(2001): Member {key} not found")
    if user is not None:
        key, kind = user["primaryEmail"].lower(), "USER"
    else:
        assert nested is not None
        key, kind = nested["groupKey"]["id"], "GROUP"
    members = world.memberships[group]
    if key in members:
        raise ApiError(409, "ALREADY_EXISTS", "Error(4003): Member already exists.")
    mid = user["id"] if user is not None else nested["name"].split("/")[1]  # type: ignore[index]
    row = {
        "name": f"{group}/memberships/{mid}",
        "preferredMemberKey": {"id": key},
        "roles": body.get("roles") or [{"name": "MEMBER"}],
        "type": kind,
    }
    members[key] = row
    return row


# groups.list: pageSize "must not be greater than 1000 for View.BASIC or 500 for View.FULL", and
# "if unspecified, defaults to 200 for View.BASIC and to 50 for View.FULL" (Cloud Identity v1 docs).
_GROUP_PAGE_LIMITS = {"BASIC": (1000, 200), "FULL": (500, 50)}
# View.BASIC is "only basic resource information": the resource's identity, no description
# (the docs list no fields; gcloud names display_name and name as examples of basic ones).
_BASIC_GROUP_FIELDS = ("name", "groupKey", "parent", "displayName", "labels")


def _list_groups(world: World, q: dict[str, str]) -> dict[str, Any]:
    parent = q.get("parent")
    if not parent:
        raise ApiError(400, "INVALID_ARGUMENT", "parent is required")
    if parent != f"customers/{world.customer}":
        raise ApiError(403, "PERMISSION_DENIED", f"the caller cannot list groups of {parent}")
    view = q.get("view") or "BASIC"
    if view == "VIEW_UNSPECIFIED":
        view = "BASIC"
    if view not in _GROUP_PAGE_LIMITS:
        raise ApiError(400, "INVALID_ARGUMENT", f"Invalid value at 'view' ({view})")
    most, default = _GROUP_PAGE_LIMITS[view]
    try:
        asked = int(q.get("pageSize") or 0)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid value at 'page_size' (TYPE_INT32)") from None
    if asked < 0 or asked > most:
        raise ApiError(400, "INVALID_ARGUMENT", f"page_size must not be greater than {most} for View.{view}")
    size = min(asked or default, world.group_page_max)
    groups = [g for g in world.groups.values() if g["parent"] == parent]
    try:
        rows, nxt = _page(groups, q.get("pageToken"), size)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", "Invalid page token") from None
    if view == "BASIC":
        rows = [{k: g[k] for k in _BASIC_GROUP_FIELDS if k in g} for g in rows]
    out: dict[str, Any] = {}
    if rows:  # proto3 JSON: an empty repeated field is left out
        out["groups"] = json.loads(json.dumps(rows))
    if nxt:
        out["nextPageToken"] = nxt
    return out


def _operation(response: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return {"done": True, "response": {"@type": f"type.googleapis.com/{kind}", **(response or {})}}


def _check_policy(world: World, policy: dict[str, Any]) -> None:
    version = int(policy.get("version") or 1)
    now = time.monotonic()
    for b in policy.get("bindings") or []:
        role = str(b.get("role") or "")
        if role not in PREDEFINED_ROLES and role not in world.custom_roles:
            raise ApiError(400, "INVALID_ARGUMENT", f"Role {role} is not supported for this resource.")
        if b.get("condition") and version < 3:
            raise ApiError(400, "INVALID_ARGUMENT", "Conditions need policy version 3.")
        if not b.get("members"):
            raise ApiError(400, "INVALID_ARGUMENT", f"Binding for {role} has no members.")
        for m in b["members"]:
            kind, _, who = str(m).partition(":")
            group = _group_by_email(world, who) if kind == "group" else None
            if kind == "group" and (group is None or world.iam_known_from.get(group["name"], 0.0) > now):
                # The same answer for a group IAM does not know yet as for no group at all (see
                # World.iam_lag): "Error 400: Group <email> does not exist., badRequest".
                raise ApiError(400, "INVALID_ARGUMENT", f"Group {who} does not exist.")
            if kind == "user" and _user_by_key(world, who) is None:
                raise ApiError(400, "INVALID_ARGUMENT", f"User {who} does not exist.")


def _user_matches(user: dict[str, Any], query: str) -> bool:
    for term in re.findall(r"(\w+):('(?:[^'\\]|\\.)*'|\S+)", query):
        fieldname, value = term
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        v = value.casefold()
        if fieldname == "externalId":
            if v not in (e["value"].casefold() for e in user["externalIds"]):
                return False
        elif fieldname == "email":
            if v not in (user["primaryEmail"].casefold(), *(a.casefold() for a in user["aliases"])):
                return False
        else:
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid Input: query field {fieldname}")
    return True


def route(world: World, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
    """One request against ``world`` (held locked by the caller)."""
    for fault in list(world.faults):
        if re.search(fault.path_pattern, path):
            world.faults.remove(fault)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            raise ApiError(fault.code, fault.status, "injected by the test", headers, fault.reason)
    _promote(world)

    # Cloud Identity v1
    if path == "/v1/groups" and method == "POST":
        return 200, _create_group_call(world, body or {}, q.get("initialGroupConfig", ""))
    if path == "/v1/groups" and method == "GET":
        return 200, _list_groups(world, q)
    if path == "/v1/groups:lookup" and method == "GET":
        group = _group_by_email(world, q.get("groupKey.id", ""))
        if group is None:
            raise ApiError(404, "NOT_FOUND", "Error(2028): Group not found")
        return 200, {"name": group["name"]}
    m = re.fullmatch(r"/v1/(groups/[^/:]+)", path)
    if m:
        group = world.groups.get(m[1])
        if group is None:
            raise ApiError(404, "NOT_FOUND", "Error(2028): Group not found")
        if method == "GET":
            return 200, group
        if method == "DELETE":
            email = group["groupKey"]["id"]
            del world.groups[m[1]]
            world.memberships.pop(m[1], None)
            for bound in world.policies.values():
                for b in bound["bindings"]:
                    b["members"] = [
                        f"deleted:group:{email}?uid={m[1].split('/')[1]}" if x == f"group:{email}" else x
                        for x in b["members"]
                    ]
            return 200, _operation(None, "google.protobuf.Empty")
    m = re.fullmatch(r"/v1/(groups/[^/:]+)/memberships(:lookup)?", path)
    if m:
        if m[1] not in world.groups:
            raise ApiError(404, "NOT_FOUND", "Error(2028): Group not found")
        members = world.memberships[m[1]]
        if m[2] and method == "GET":
            key = q.get("memberKey.id", "").casefold()
            row = next((r for k, r in members.items() if k.casefold() == key), None)
            if row is None:
                raise ApiError(404, "NOT_FOUND", "Error(2029): Membership not found")
            return 200, {"name": row["name"]}
        if method == "GET":
            size = min(int(q.get("pageSize") or 200), world.membership_page_max, 1000)
            rows, nxt = _page(list(members.values()), q.get("pageToken"), size)
            out: dict[str, Any] = {"memberships": rows}
            if nxt:
                out["nextPageToken"] = nxt
            return 200, out
        if method == "POST":
            row = _create_membership(world, m[1], body or {})
            return 200, _operation(row, "google.apps.cloudidentity.groups.v1.Membership")
    m = re.fullmatch(r"/v1/(groups/[^/:]+)/memberships/([^/:]+)", path)
    if m and method == "DELETE":
        members = world.memberships.get(m[1], {})
        full = f"{m[1]}/memberships/{m[2]}"
        found = next((k for k, r in members.items() if r["name"] == full), None)
        if found is None:
            raise ApiError(404, "NOT_FOUND", "Error(2029): Membership not found")
        del members[found]
        return 200, _operation(None, "google.protobuf.Empty")

    # Admin SDK directory_v1
    if path == "/admin/directory/v1/users" and method == "GET":
        if q.get("customer") not in (world.customer, "my_customer") and q.get("domain") != world.domain:
            raise ApiError(400, "INVALID_ARGUMENT", "Bad Request: customer")
        users = [u for u in world.users if _user_matches(u, q.get("query", ""))]
        size = min(int(q.get("maxResults") or 100), world.user_page_max, 500)
        rows, nxt = _page(users, q.get("pageToken"), size)
        out = {"kind": "admin#directory#users", "etag": '"x"'}
        if rows:
            out["users"] = rows
        if nxt:
            out["nextPageToken"] = nxt
        return 200, out
    m = re.fullmatch(r"/admin/directory/v1/users/([^/]+)", path)
    if m and method == "GET":
        key = urllib.parse.unquote(m[1])
        user = _user_by_key(world, key)
        domain = key.rpartition("@")[2].lower()
        if user is None and "@" in key and domain not in (world.domain, *world.secondary_domains):
            # Outside the customer's domains: 403, not 404 (see World.secondary_domains).
            message = "Not Authorized to access this resource/api"
            raise ApiError(403, "", message, reason="forbidden", domain="global")
        if user is None:
            raise ApiError(404, "NOT_FOUND", "Resource Not Found: userKey")
        return 200, user

    # Resource Manager v3
    m = re.fullmatch(r"/v3/projects/([^/:]+):(getIamPolicy|setIamPolicy)", path)
    if m and method == "POST":
        policy = world.policies.get(m[1])
        if policy is None:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"The caller does not have permission on projects/{m[1]} or it does not exist",
            )
        if m[2] == "getIamPolicy":
            requested = int(((body or {}).get("options") or {}).get("requestedPolicyVersion") or 1)
            if requested < 3 and any(b.get("condition") for b in policy["bindings"]):
                raise ApiError(400, "INVALID_ARGUMENT", "The policy has conditions: request version 3.")
            return 200, policy
        for change in world.interference.pop(m[1], []):
            change(policy)
            policy["etag"] = _etag(next(world.ids))
        new = dict((body or {}).get("policy") or {})
        # Optimistic concurrency: "systems are expected to put that etag in the request to
        # setIamPolicy to ensure that their change will be applied to the same version of the
        # policy" (Resource Manager v3, Policy.etag); a stale one fails "with a 409 error code and
        # ABORTED status" (IAM, UpdatePolicyRequest.policy). Without an etag the write wins blindly,
        # as Google allows. The message below is the one Google gives as far as we know (not
        # checked against a live project).
        if new.get("etag") and new["etag"] != policy["etag"]:
            raise ApiError(
                409,
                "ABORTED",
                "There were concurrent policy changes. Please retry the whole read-modify-write.",
            )
        _check_policy(world, new)
        policy["bindings"] = json.loads(json.dumps(new.get("bindings") or []))
        policy["version"] = int(new.get("version") or 1)
        policy["etag"] = _etag(next(world.ids))
        return 200, policy

    raise ApiError(404, "NOT_FOUND", f"no such method: {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    world: World

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _serve(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        if parsed.path == "/token" and self.command == "POST":
            self._token(raw)
            return
        if parsed.path == "/sts" and self.command == "POST":
            self._token_exchange(raw)
            return
        try:
            with self.world.lock:
                self.world.authorizations.append((parsed.path, self.headers.get("Authorization") or ""))
            body = json.loads(raw) if raw else None
            with self.world.lock:
                self.world.requests.append((self.command, parsed.path))
                for watcher in list(self.world.watchers):
                    watcher(self.command, parsed.path)
                code, payload = route(self.world, self.command, parsed.path, query, body)
                data = json.dumps(payload).encode()
        except ApiError as exc:
            code, headers, data = exc.code, exc.headers, exc.body()
        except ValueError:
            code = 400
            data = json.dumps(
                {"error": {"code": 400, "message": "bad JSON", "status": "INVALID_ARGUMENT"}}
            ).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _token_exchange(self, raw: bytes) -> None:
        """Security Token Service ``v1/token`` (RFC 8693), what workload identity federation calls."""
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        with self.world.lock:
            self.world.tokens.append(form)
        data = json.dumps(
            {
                "access_token": f"sts-for-{form.get('subject_token')}",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _token(self, raw: bytes) -> None:
        """OAuth 2.0 JWT bearer grant (RFC 7523) as Google's token endpoint answers it; the
        assertion's signature is not checked, its claims are recorded."""
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        payload = form.get("assertion", "").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        with self.world.lock:
            self.world.tokens.append(claims)
        token = f"token-for-{claims.get('sub') or claims.get('iss')}"
        data = json.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = _serve
