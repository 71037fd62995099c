"""A small local server speaking the Cloud Foundry v3 and UAA JSON the CF driver uses.

No emulator exists for the Cloud Controller, so this server implements the documented calls
``platforms.cloudfoundry`` makes, with their wire format:

* ``GET /`` (root: ``links.cloud_controller_v3``, ``links.uaa``, ``links.login``).
* UAA ``POST /uaa/oauth/token`` (client credentials, HTTP basic; 401 ``unauthorized`` on bad
  credentials; ``expires_in``). Every ``/v3`` request needs a bearer token it issued (401
  ``CF-InvalidAuthToken`` otherwise).
* ``GET /v3/spaces/{guid}``, ``GET /v3/organizations/{guid}`` (404 ``CF-ResourceNotFound``).
* ``GET /v3/users`` with ``guids``, ``usernames``, ``origins`` (``origins`` only with
  ``usernames``, 400 otherwise, as documented), ``page``/``per_page``. Username matching ignores
  case unless ``case_sensitive_usernames`` is set. Only *Cloud Controller* users the caller may
  read are listed (see "How the real service behaves" below).
* ``GET /v3/roles`` with ``guids``, ``types``, ``space_guids``, ``organization_guids``,
  ``user_guids``, ``include=user|space|organization`` (``included``), ``page``/``per_page``;
  ``GET /v3/roles/{guid}``; ``POST /v3/roles`` for a user by ``guid`` or by ``username`` +
  ``origin`` (201; 422 ``CF-UnprocessableEntity`` on a duplicate role "User 'x' already has 'T'
  role in space 'S'.", on a space role without a role in the space's org, on an unknown
  space/org, on an unknown username); ``DELETE /v3/roles/{guid}`` (202 with ``Location`` of a
  ``role.delete`` job; 404 when unknown).
* ``GET /v3/jobs/{guid}`` (``PROCESSING``, then ``POLLING``, then ``COMPLETE`` or ``FAILED``).
* Lists: ``pagination`` with ``total_results``, ``total_pages``, ``first``, ``last``, ``next``
  (null on the last page), ``previous``, and absolute ``href`` links.

Every request is logged in ``requests`` (method, path). Tests set state directly (``add_org``,
``add_space``, ``add_user``, ``add_role``, ``delete_role``) and read it back the same way
(``space_roles``, ``org_roles``), never through the driver; ``fail_next`` injects an error
(e.g. 429 with Retry-After), ``expire_tokens`` makes every issued token invalid.

How the real service behaves, and how this server models it (sources: cloudfoundry/cloud_controller_ng
on GitHub, files named below; the v3 API docs at https://v3-apidocs.cloudfoundry.org):

* **Users the Cloud Controller does not know are invisible.** ``GET /v3/users`` lists rows of the
  Cloud Controller's own user table, filtered by ``permission_queryer.readable_users_query``
  (app/fetchers/user_list_fetcher.rb: ``usernames`` are turned into UAA ids, then *intersected*
  with that dataset). A user exists there only once they called the API or got a role; an SSO
  user who never logged in has no UAA shadow user either. ``add_uaa_user`` makes a user UAA knows
  but the Cloud Controller does not (invisible to ``GET /v3/users``); ``add_user`` one both know.
* **A caller sees only users of the orgs it can read.** lib/cloud_controller/permissions.rb
  ``readable_users_query``: global readers (``cloud_controller.admin``) see every user, others
  only users with a role in an org they read (``membership.visible_user_ids_in_orgs``).
  ``world.caller_orgs`` (None: admin) makes the token's client an org manager of those orgs: it
  reads users and roles of those orgs only and may write roles only there (403 otherwise).
* **Roles by username + origin.** app/controllers/v3/roles_controller.rb: an *org* role looks the
  user up in UAA (``id_for_username(username, origin)``; 422 "No user exists with the username
  'x' and origin 'y'." when UAA has none), and creates the Cloud Controller user when missing
  (``User.first(guid:) || create_cc_user``); with ``cc.allow_user_creation_by_org_manager`` and an
  origin other than ``uaa`` it first creates the UAA shadow user (``create_uaa_shadow_user``,
  ``world.allow_user_creation_by_org_manager``). A *space* role needs a user the caller can read
  and who has a role in the space's org; otherwise, and for a username UAA does not know, the
  answer is 422 "Users cannot be assigned roles in a space if they do not have a role in that
  space's organization." (``unprocessable_space_user!``; app/actions/role_create.rb for the same
  text and for "already has"). Both paths need the feature flag ``set_roles_by_username``
  (``FeatureFlag.raise_unless_enabled!``; modelled as enabled, its 403 is not).
* **Rate limiting.** middleware/rate_limiter.rb: every answer carries ``X-RateLimit-Limit``,
  ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (UTC epoch *seconds*, the window's end
  truncated by ``to_i``); past the limit the answer is 429 ``CF-RateLimitExceeded`` with a JSON
  body but ``Content-Type: text/plain``, and ``Retry-After`` set to the *same epoch value*
  (``rate_limit_headers['Retry-After'] = rate_limit_headers['X-RateLimit-Reset']``, in every
  version of the file), not to a number of seconds. Admins (``cloud_controller.admin``) are not
  limited. Docs: https://docs.cloudfoundry.org/running/rate-limit-cloud-controller-api.html
  (only the X-RateLimit-* headers are documented there). Issue 20 also reports 429s carrying
  only ``X-RateLimit-Reset``; we found no source for that variant (a proxy dropping Retry-After,
  perhaps) and model it as ``throttle_next(..., retry_after=False)``. ``world.rate_limit``
  turns the limiter on for non-admin callers; ``throttle_next`` makes the next matching request
  answer as the limiter would.
* **Asynchronous jobs.** A role deletion answers 202 with a job; jobs are ``PROCESSING``, then
  ``POLLING`` ("waiting on an external resource", cloudfoundry/cli
  api/cloudcontroller/ccv3/constant/job.go; v3 docs "The job object"), then ``COMPLETE`` or
  ``FAILED``; the role is gone only once the job completed. ``world.job_lag`` is how long a job
  takes (half PROCESSING, half POLLING); a finished job may be pruned (404).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.local_server import WorldServer

CLIENT_ID = "replicator"
CLIENT_SECRET = "s3cret-for-tests"
SECRET_ENV = "CF_TEST_CLIENT_SECRET"
SPACE_TYPES = ("space_developer", "space_manager", "space_auditor", "space_supporter")
ORG_TYPES = (
    "organization_user",
    "organization_manager",
    "organization_auditor",
    "organization_billing_manager",
)
TIMESTAMP = "2026-01-01T00:00:00Z"


class ApiError(Exception):
    def __init__(
        self, code: int, title: str, detail: str, cf_code: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.code, self.title, self.detail, self.cf_code = code, title, detail, cf_code
        self.headers = headers or {}

    def body(self) -> bytes:
        error = {"detail": self.detail, "title": self.title, "code": self.cf_code}
        return json.dumps({"errors": [error]}).encode()


def _not_found(kind: str) -> ApiError:
    return ApiError(404, "CF-ResourceNotFound", f"{kind} not found", 10010)


def _unprocessable(detail: str) -> ApiError:
    return ApiError(422, "CF-UnprocessableEntity", detail, 10008)


@dataclass
class Fault:
    method: str
    path_pattern: str
    code: int
    retry_after: str | None = None
    reset_in: float | None = None
    """A rate-limiter 429: the window ends this many seconds after the fault fires."""


@dataclass
class World:
    lock: threading.RLock = field(default_factory=threading.RLock)
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The Cloud Controller's users (guid -> guid, username, origin as UAA has them)."""
    uaa_users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """UAA's users (guid -> guid, username, origin): every Cloud Controller user, and those the
    Cloud Controller does not know yet (``add_uaa_user``)."""
    caller_orgs: set[str] | None = None
    """None: the client is ``cloud_controller.admin``; else it is org manager of these orgs only."""
    allow_user_creation_by_org_manager: bool = False
    """CAPI's ``cc.allow_user_creation_by_org_manager``: an org role by username + origin (not
    ``uaa``) creates the UAA shadow user when UAA has none."""
    rate_limit: tuple[int, float] | None = None
    """(requests, window seconds) a non-admin client may make; None: the limiter is off."""
    rate_counts: dict[str, list[float]] = field(default_factory=dict)
    """token -> [requests in the window, the window's end (epoch seconds)]."""
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    token_lifetime: int = 3600
    job_mode: str = "complete"
    """How a deletion job ends: ``complete`` (the role is gone) or ``fail`` (FAILED, the role stays)."""
    job_lag: float = 0.0
    """Seconds a job takes: PROCESSING the first half, POLLING the second, then it ends."""
    case_sensitive_usernames: bool = False
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    base: str = ""


def _resource(guid: str, **fields: Any) -> dict[str, Any]:
    """A v3 resource: its ``guid`` and timestamps, then ``fields`` in their order."""
    return {"guid": guid, "created_at": TIMESTAMP, "updated_at": TIMESTAMP, **fields}


def _link(world: World, path: str) -> dict[str, str]:
    """A link to ``/v3/<path>`` on this server."""
    return {"href": f"{world.base}v3/{path}"}


def _role_json(world: World, role: dict[str, Any]) -> dict[str, Any]:
    def rel(guid: str | None) -> dict[str, Any]:
        return {"data": {"guid": guid} if guid else None}

    return _resource(
        role["guid"],
        type=role["type"],
        relationships={
            "user": rel(role["user"]),
            "space": rel(role.get("space")),
            "organization": rel(role.get("organization")),
        },
        links={"self": _link(world, f"roles/{role['guid']}"), "user": _link(world, f"users/{role['user']}")},
    )


def _user_json(world: World, user: dict[str, Any]) -> dict[str, Any]:
    return _resource(
        user["guid"],
        username=user["username"],
        presentation_name=user["username"] or user["guid"],
        origin=user["origin"],
        metadata={"labels": {}, "annotations": {}},
        links={"self": _link(world, f"users/{user['guid']}")},
    )


def _space_json(world: World, space: dict[str, Any]) -> dict[str, Any]:
    return _resource(
        space["guid"],
        name=space["name"],
        relationships={"organization": {"data": {"guid": space["org"]}}, "quota": {"data": None}},
        metadata={"labels": {}, "annotations": {}},
        links={
            "self": _link(world, f"spaces/{space['guid']}"),
            "organization": _link(world, f"organizations/{space['org']}"),
        },
    )


def _org_json(world: World, org: dict[str, Any]) -> dict[str, Any]:
    return _resource(
        org["guid"],
        name=org["name"],
        suspended=False,
        relationships={"quota": {"data": None}},
        metadata={"labels": {}, "annotations": {}},
        links={"self": _link(world, f"organizations/{org['guid']}")},
    )


def _csv(query: dict[str, str], name: str) -> list[str] | None:
    if name not in query:
        return None
    return [v for v in query[name].split(",") if v]


def _paginate(
    world: World, path: str, query: dict[str, str], items: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        page = int(query.get("page", "1"))
        per_page = int(query.get("per_page", "50"))
    except ValueError:
        raise ApiError(400, "CF-BadQueryParameter", "page and per_page must be integers", 10005) from None
    if page < 1 or not 1 <= per_page <= 5000:
        raise ApiError(400, "CF-BadQueryParameter", "Per page must be between 1 and 5000", 10005)
    total = len(items)
    pages = max(1, -(-total // per_page))

    def href(n: int) -> dict[str, str]:
        q = {**query, "page": str(n), "per_page": str(per_page)}
        return {"href": f"{world.base}{path.lstrip('/')}?{urllib.parse.urlencode(q)}"}

    chunk = items[(page - 1) * per_page : page * per_page]
    pagination = {
        "total_results": total,
        "total_pages": pages,
        "first": href(1),
        "last": href(pages),
        "next": href(page + 1) if page < pages else None,
        "previous": href(page - 1) if page > 1 else None,
    }
    return chunk, pagination


def _same_name(world: World, a: str, b: str) -> bool:
    return a == b if world.case_sensitive_usernames else a.lower() == b.lower()


def _uaa_ids(world: World, names: list[str], origins: list[str] | None) -> set[str]:
    """UAA's ids of users with one of ``names`` (in one of ``origins``): what the Cloud Controller
    asks UAA before it filters its own users (``ids_for_usernames_and_origins``)."""
    return {
        u["guid"]
        for u in world.uaa_users.values()
        if any(_same_name(world, u["username"], n) for n in names)
        and (origins is None or u["origin"] in origins)
    }


def _org_of_role(world: World, role: dict[str, Any]) -> str | None:
    if role.get("organization"):
        return str(role["organization"])
    space = world.spaces.get(role.get("space") or "")
    return str(space["org"]) if space else None


def _readable_roles(world: World) -> list[dict[str, Any]]:
    """Roles in orgs (and their spaces) the caller reads: all for an admin (roles_controller.rb
    ``readable_roles``)."""
    roles = sorted(world.roles.values(), key=lambda r: r["seq"])
    if world.caller_orgs is None:
        return roles
    return [r for r in roles if _org_of_role(world, r) in world.caller_orgs]


def _readable_users(world: World) -> dict[str, dict[str, Any]]:
    """Cloud Controller users the caller may read (permissions.rb ``readable_users_query``): all of
    them for an admin, else those with a role in an org the caller reads."""
    if world.caller_orgs is None:
        return world.users
    holders = {r["user"] for r in _readable_roles(world)}
    return {g: u for g, u in world.users.items() if g in holders}


def _list_users(world: World, path: str, query: dict[str, str]) -> dict[str, Any]:
    guids, names, origins = _csv(query, "guids"), _csv(query, "usernames"), _csv(query, "origins")
    if origins is not None and names is None:
        raise ApiError(400, "CF-UnprocessableEntity", "Origins filter requires usernames", 10008)
    in_uaa = _uaa_ids(world, names, origins) if names is not None else None
    users = [
        u
        for u in sorted(_readable_users(world).values(), key=lambda u: u["seq"])
        if (guids is None or u["guid"] in guids) and (in_uaa is None or u["guid"] in in_uaa)
    ]
    chunk, pagination = _paginate(world, path, query, users)
    return {"pagination": pagination, "resources": [_user_json(world, u) for u in chunk]}


def _list_roles(world: World, path: str, query: dict[str, str]) -> dict[str, Any]:
    filters = {
        "guid": _csv(query, "guids"),
        "type": _csv(query, "types"),
        "space": _csv(query, "space_guids"),
        "organization": _csv(query, "organization_guids"),
        "user": _csv(query, "user_guids"),
    }
    roles = [
        r
        for r in _readable_roles(world)
        if all(values is None or r.get(key) in values for key, values in filters.items())
    ]
    chunk, pagination = _paginate(world, path, query, roles)
    body: dict[str, Any] = {"pagination": pagination, "resources": [_role_json(world, r) for r in chunk]}
    include = _csv(query, "include") or []
    if include:
        included: dict[str, list[dict[str, Any]]] = {}
        for kind in include:
            if kind == "user":
                guids = dict.fromkeys(r["user"] for r in chunk)
                included["users"] = [_user_json(world, world.users[g]) for g in guids if g in world.users]
            elif kind == "space":
                guids = dict.fromkeys(r["space"] for r in chunk if r.get("space"))
                included["spaces"] = [_space_json(world, world.spaces[g]) for g in guids]
            elif kind == "organization":
                guids = dict.fromkeys(r["organization"] for r in chunk if r.get("organization"))
                included["organizations"] = [_org_json(world, world.orgs[g]) for g in guids]
            else:
                raise ApiError(400, "CF-BadQueryParameter", f"Invalid included resource: '{kind}'", 10005)
        body["included"] = included
    return body


def _not_authorized() -> ApiError:
    return ApiError(403, "CF-NotAuthorized", "You are not authorized to perform the requested action", 10003)


SPACE_USER_REFUSED = (
    "Users cannot be assigned roles in a space if they do not have a role in that space's organization."
)
"""roles_controller.rb ``unprocessable_space_user!`` and role_create.rb ``create_space_role``."""


def _uaa_user(world: World, username: str, origin: str) -> dict[str, Any] | None:
    found = [
        u
        for u in world.uaa_users.values()
        if u["origin"] == origin and _same_name(world, u["username"], username)
    ]
    return found[0] if found else None


def _cc_user(world: World, uaa: dict[str, Any]) -> dict[str, Any]:
    """The Cloud Controller user of a UAA user, created when missing (``create_cc_user``)."""
    user = world.users.get(uaa["guid"])
    if user is None:
        user = {**uaa, "seq": next(world.counter)}
        world.users[uaa["guid"]] = user
    return user


def _role_user(world: World, data: dict[str, Any], org_role: bool) -> dict[str, Any]:
    """The Cloud Controller user a new role is for, as roles_controller.rb finds (or makes) it."""
    guid, username, origin = data.get("guid"), data.get("username"), data.get("origin")
    if guid:
        if org_role:  # ``User.first(guid:) || create_cc_user(user_guid)``
            uaa = world.uaa_users.get(guid) or {"guid": guid, "username": None, "origin": None}
            return _cc_user(world, uaa)
        user = _readable_users(world).get(guid)
        if user is None:
            raise _unprocessable(SPACE_USER_REFUSED)
        return user
    if not username:
        raise _unprocessable("User guid or username must be provided")
    origin = origin or "uaa"  # the real one asks UAA for the origins when none is given
    uaa = _uaa_user(world, username, origin)
    if not org_role:
        user = _readable_users(world).get(uaa["guid"]) if uaa else None
        if user is None:
            raise _unprocessable(SPACE_USER_REFUSED)
        return user
    if uaa is None and world.allow_user_creation_by_org_manager and origin != "uaa":
        uaa = {"guid": str(uuid.uuid4()), "username": username, "origin": origin}
        world.uaa_users[uaa["guid"]] = uaa  # ``create_uaa_shadow_user``
    if uaa is None:
        raise _unprocessable(f"No user exists with the username '{username}' and origin '{origin}'.")
    return _cc_user(world, uaa)


def _create_role(world: World, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "CF-MessageParseError", "Request invalid due to parse error", 1001)
    role_type = body.get("type")
    rel = body.get("relationships") or {}
    user_data = (rel.get("user") or {}).get("data") or {}
    space_guid = ((rel.get("space") or {}).get("data") or {}).get("guid")
    org_guid = ((rel.get("organization") or {}).get("data") or {}).get("guid")
    if role_type not in SPACE_TYPES + ORG_TYPES:
        raise _unprocessable(f"Type must be one of the allowed types {sorted(SPACE_TYPES + ORG_TYPES)}")
    if role_type in SPACE_TYPES:
        space = world.spaces.get(space_guid or "")
        if space is None:
            raise _unprocessable("Invalid space. Ensure that the space exists and you have access to it.")
        if world.caller_orgs is not None and space["org"] not in world.caller_orgs:
            raise _not_authorized()
        user = _role_user(world, user_data, org_role=False)
        held = [r for r in world.roles.values() if r["user"] == user["guid"]]
        if not any(r.get("organization") == space["org"] for r in held):
            raise _unprocessable(SPACE_USER_REFUSED)
        if any(r.get("space") == space_guid and r["type"] == role_type for r in held):
            raise _unprocessable(
                f"User '{user['username']}' already has '{role_type}' role in space '{space['name']}'."
            )
        role = {"type": role_type, "user": user["guid"], "space": space_guid, "organization": None}
    else:
        org = world.orgs.get(org_guid or "")
        if org is None:
            raise _unprocessable(
                "Invalid organization. Ensure that the organization exists and you have access to it."
            )
        if world.caller_orgs is not None and org_guid not in world.caller_orgs:
            raise _not_authorized()
        user = _role_user(world, user_data, org_role=True)
        held = [r for r in world.roles.values() if r["user"] == user["guid"]]
        if any(r.get("organization") == org_guid and r["type"] == role_type for r in held):
            raise _unprocessable(
                f"User '{user['username']}' already has '{role_type}' role in organization '{org['name']}'."
            )
        role = {"type": role_type, "user": user["guid"], "space": None, "organization": org_guid}
    role["guid"] = str(uuid.uuid4())
    role["seq"] = next(world.counter)
    world.roles[role["guid"]] = role
    return _role_json(world, role)


def _job_state(world: World, job: dict[str, Any]) -> str:
    """PROCESSING, POLLING, then the job's end: it ends ``job_lag`` seconds after it was made."""
    elapsed = time.monotonic() - job["created"]
    if elapsed < job["lag"] / 2:
        return "PROCESSING"
    if elapsed < job["lag"]:
        return "POLLING"
    if job["end"] == "COMPLETE":
        world.roles.pop(job["role"], None)
    return str(job["end"])


def _settle_jobs(world: World) -> None:
    """Jobs run in the background: every one due has ended, whether anyone polls it or not."""
    for job in world.jobs.values():
        _job_state(world, job)


def _job(world: World, guid: str) -> dict[str, Any]:
    job = world.jobs.get(guid)
    if job is None:
        raise _not_found("Job")
    state = _job_state(world, job)
    job["polls"] += 1
    job["seen"].append(state)
    errors = []
    if state == "FAILED":
        errors = [
            {
                "detail": "Deletion of role failed: the database is read-only",
                "title": "CF-UnknownError",
                "code": 10001,
            }
        ]
    return _resource(
        guid,
        operation="role.delete",
        state=state,
        errors=errors,
        warnings=[],
        links={"self": _link(world, f"jobs/{guid}")},
    )


def route(
    world: World, method: str, path: str, query: dict[str, str], body: Any
) -> tuple[int, Any, dict[str, str]]:
    if method == "GET" and path in ("", "/"):
        return (
            200,
            {
                "links": {
                    "self": {"href": world.base.rstrip("/")},
                    "cloud_controller_v3": {"href": f"{world.base}v3", "meta": {"version": "3.180.0"}},
                    "login": {"href": f"{world.base}uaa"},
                    "uaa": {"href": f"{world.base}uaa"},
                }
            },
            {},
        )
    _settle_jobs(world)
    if method == "GET" and path == "/v3/users":
        return 200, _list_users(world, path, query), {}
    if method == "GET" and path == "/v3/roles":
        return 200, _list_roles(world, path, query), {}
    if method == "POST" and path == "/v3/roles":
        return 201, _create_role(world, body), {}
    m = re.fullmatch(r"/v3/roles/([^/]+)", path)
    if m:
        role = world.roles.get(m.group(1))
        if role is None:
            raise _not_found("Role")
        if method == "GET":
            return 200, _role_json(world, role), {}
        if method == "DELETE":
            job_guid = str(uuid.uuid4())
            world.jobs[job_guid] = {
                "end": {"complete": "COMPLETE", "fail": "FAILED"}[world.job_mode],
                "role": role["guid"],
                "polls": 0,
                "seen": [],
                "created": time.monotonic(),
                "lag": world.job_lag,
            }
            _job_state(world, world.jobs[job_guid])  # without lag it ends at once
            return 202, None, {"Location": f"{world.base}v3/jobs/{job_guid}"}
    m = re.fullmatch(r"/v3/jobs/([^/]+)", path)
    if m and method == "GET":
        return 200, _job(world, m.group(1)), {}
    for collection, table, kind, render in (
        ("spaces", world.spaces, "Space", _space_json),
        ("organizations", world.orgs, "Organization", _org_json),
    ):
        m = re.fullmatch(rf"/v3/{collection}/([^/]+)", path)
        if m and method == "GET":
            found = table.get(m.group(1))
            if found is not None and world.caller_orgs is not None:
                # an org manager reads its orgs and their spaces only (404 for the others)
                found = found if found.get("org", found["guid"]) in world.caller_orgs else None
            if found is None:
                raise _not_found(kind)
            return 200, render(world, found), {}
    raise ApiError(404, "CF-NotFound", "Unknown request", 10000)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    world: World

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _reply(self, code: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        world = self.world
        with world.lock:
            world.requests.append((self.command, parsed.path))
            for fault in list(world.faults):
                if fault.method == self.command and re.fullmatch(fault.path_pattern, parsed.path):
                    world.faults.remove(fault)
                    if fault.reset_in is not None:
                        self._rate_limited(time.time() + fault.reset_in, fault.retry_after != "none")
                        return
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    title = "CF-RateLimitExceeded" if fault.code == 429 else "CF-ServiceUnavailable"
                    err = ApiError(fault.code, title, "injected by the test", 10013, headers)
                    self._reply(err.code, err.body(), err.headers)
                    return
        if parsed.path == "/uaa/oauth/token" and self.command == "POST":
            self._token(raw)
            return
        try:
            if parsed.path.startswith("/v3"):
                auth = self.headers.get("Authorization") or ""
                with world.lock:
                    valid = auth.lower().startswith("bearer ") and auth[7:] in world.tokens
                if not valid:
                    raise ApiError(401, "CF-InvalidAuthToken", "Invalid Auth Token", 1000)
                if self._over_rate_limit(auth[7:]):
                    return
            body = json.loads(raw) if raw else None
            with world.lock:
                code, payload, headers = route(world, self.command, parsed.path, query, body)
            data = json.dumps(payload).encode() if payload is not None else b""
        except ApiError as exc:
            code, headers, data = exc.code, exc.headers, exc.body()
        except ValueError:
            code, headers = 400, {}
            data = ApiError(400, "CF-MessageParseError", "Request invalid due to parse error", 1001).body()
        self._reply(code, data, headers)

    def _over_rate_limit(self, token: str) -> bool:
        """middleware/rate_limiter.rb for a non-admin client: count the request in its window; past
        the limit, answer 429 as the limiter does and say so."""
        world = self.world
        with world.lock:
            if world.rate_limit is None or world.caller_orgs is None:  # admins are not limited
                return False
            limit, window = world.rate_limit
            now = time.time()
            count = world.rate_counts.get(token)
            if count is None or count[1] < now:
                count = world.rate_counts[token] = [0, now + window]
            count[0] += 1
            if count[0] <= limit:
                return False
            valid_until = count[1]
        self._rate_limited(valid_until, True)
        return True

    def _rate_limited(self, valid_until: float, with_retry_after: bool) -> None:
        """The rate limiter's 429: X-RateLimit-Reset is the window's end in epoch seconds, truncated
        (``valid_until.utc.to_i``); Retry-After is that same epoch value (not a delay); the JSON body
        goes out as text/plain (middleware/rate_limiter.rb ``too_many_requests!``)."""
        reset = str(int(valid_until))
        headers = {"X-RateLimit-Limit": "0", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        if with_retry_after:
            headers["Retry-After"] = reset
        data = ApiError(429, "CF-RateLimitExceeded", "Rate Limit Exceeded", 10013).body()
        self.send_response(429)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _token(self, raw: bytes) -> None:
        form = dict(urllib.parse.parse_qsl(raw.decode()))
        auth = self.headers.get("Authorization") or ""
        client = secret = ""
        if auth.lower().startswith("basic "):
            client, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            data = json.dumps(
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"}
            )
            self._reply(400, data.encode(), {})
            return
        if (client, secret) != (CLIENT_ID, CLIENT_SECRET):
            data = json.dumps({"error": "unauthorized", "error_description": "Bad credentials"})
            self._reply(401, data.encode(), {})
            return
        token = f"token-{uuid.uuid4().hex}"
        with self.world.lock:
            self.world.tokens.add(token)
            lifetime = self.world.token_lifetime
            admin = self.world.caller_orgs is None
        data = json.dumps(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": lifetime,
                "scope": "cloud_controller.admin"
                if admin
                else "cloud_controller.read cloud_controller.write",
                "jti": token[6:],
            }
        )
        self._reply(200, data.encode(), {})

    do_GET = do_POST = do_DELETE = _serve


class CfServer(WorldServer[World]):
    """One server on 127.0.0.1 (a free port) serving the Cloud Controller and UAA at ``url``."""

    thread_name = "cf-server"
    url_suffix = "/"
    reset_keeps = ("lock", "base")

    def __init__(self) -> None:
        super().__init__(World, _Handler)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> CfServer:
        if self._thread is None:
            self._bind()
            self.world.base = self.url
        return super().start()

    def driver_options(self, **extra: Any) -> dict[str, Any]:
        """The ``cloudfoundry:`` block pointing the driver at this server (secret in SECRET_ENV)."""
        return {
            "apiUrl": self.url.rstrip("/"),
            "uaaUrl": f"{self.url}uaa",
            "clientId": CLIENT_ID,
            "clientSecret": {"env": SECRET_ENV},
            "timeout": 10,
            "jobPollInterval": 0.01,
            **extra,
        }

    # --- state, set and read directly -----------------------------------------------------------

    def add_org(self, name: str, guid: str | None = None) -> str:
        with self.world.lock:
            guid = guid or str(uuid.uuid4())
            self.world.orgs[guid] = {"guid": guid, "name": name}
            return guid

    def add_space(self, org: str, name: str, guid: str | None = None) -> str:
        with self.world.lock:
            guid = guid or str(uuid.uuid4())
            self.world.spaces[guid] = {"guid": guid, "name": name, "org": org}
            return guid

    def add_user(self, username: str, origin: str = "uaa") -> str:
        """A user UAA and the Cloud Controller both know (logged in once, or made by ``cf create-user``)."""
        guid = self.add_uaa_user(username, origin)
        with self.world.lock:
            self.world.users[guid] = {**self.world.uaa_users[guid], "seq": next(self.world.counter)}
        return guid

    def add_uaa_user(self, username: str, origin: str = "uaa") -> str:
        """A user only UAA knows (provisioned there, never logged in to Cloud Foundry): invisible
        to ``GET /v3/users`` until an org role by username + origin makes the Cloud Controller user."""
        return self._add("uaa_users", username=username, origin=origin)

    def cc_user(self, username: str, origin: str = "uaa") -> str | None:
        """The guid of the Cloud Controller user with this username and origin (None: unknown)."""
        with self.world.lock:
            return next(
                (
                    g
                    for g, u in self.world.users.items()
                    if (u["username"], u["origin"]) == (username, origin)
                ),
                None,
            )

    def add_role(self, role_type: str, user: str, *, space: str | None = None, org: str | None = None) -> str:
        """A role given by someone else (no checks)."""
        return self._add("roles", type=role_type, user=user, space=space, organization=org)

    def _add(self, table: str, **fields: Any) -> str:
        """A new entry in the world's ``table`` under a new guid, numbered (``seq``) in creation order."""
        with self.world.lock:
            guid = str(uuid.uuid4())
            getattr(self.world, table)[guid] = {"guid": guid, **fields, "seq": next(self.world.counter)}
            return guid

    def delete_role(self, role_type: str, username: str, space: str) -> None:
        """Delete a role by hand."""
        with self.world.lock:
            for guid, role in list(self.world.roles.items()):
                user = self.world.users[role["user"]]
                if role["type"] == role_type and role.get("space") == space and user["username"] == username:
                    del self.world.roles[guid]
                    return
        raise KeyError((role_type, username, space))

    def space_roles(self, space: str) -> list[tuple[str, str]]:
        """(username, role type) of every role in the space, sorted."""
        return self._roles("space", space)

    def org_roles(self, org: str) -> list[tuple[str, str]]:
        return self._roles("organization", org)

    def _roles(self, scope: str, guid: str) -> list[tuple[str, str]]:
        with self.world.lock:
            _settle_jobs(self.world)
            return sorted(
                (self.world.users[r["user"]]["username"], r["type"])
                for r in self.world.roles.values()
                if r.get(scope) == guid
            )

    def fail_next(self, method: str, path_pattern: str, code: int, retry_after: str | None = None) -> None:
        with self.world.lock:
            self.world.faults.append(Fault(method, path_pattern, code, retry_after))

    def throttle_next(
        self, method: str, path_pattern: str, reset_in: float, *, retry_after: bool = True
    ) -> None:
        """The next matching request answers as CF's rate limiter does when the window ends in
        ``reset_in`` seconds: Retry-After = X-RateLimit-Reset (epoch seconds), or with
        ``retry_after=False`` only X-RateLimit-Reset."""
        with self.world.lock:
            fault = Fault(method, path_pattern, 429, None if retry_after else "none", reset_in)
            self.world.faults.append(fault)

    def job_states_seen(self) -> list[list[str]]:
        """Per deletion job, in creation order: the states its polls were answered with."""
        with self.world.lock:
            return [list(job["seen"]) for job in self.world.jobs.values()]

    def expire_tokens(self) -> None:
        with self.world.lock:
            self.world.tokens.clear()

    def calls(self, method: str, path_regex: str) -> int:
        with self.world.lock:
            return sum(1 for m, p in self.world.requests if m == method and re.fullmatch(path_regex, p))
