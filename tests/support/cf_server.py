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
  case unless ``case_sensitive_usernames`` is set.
* ``GET /v3/roles`` with ``guids``, ``types``, ``space_guids``, ``organization_guids``,
  ``user_guids``, ``include=user|space|organization`` (``included``), ``page``/``per_page``;
  ``GET /v3/roles/{guid}``; ``POST /v3/roles`` (201; 422 ``CF-UnprocessableEntity`` on a duplicate
  role "User 'x' already has 'T' role in space 'S'.", on a space role without a role in the
  space's org, on an unknown user/space/org); ``DELETE /v3/roles/{guid}`` (202 with ``Location``
  of a ``role.delete`` job; 404 when unknown).
* ``GET /v3/jobs/{guid}`` (``COMPLETE``, or ``PROCESSING`` first / ``FAILED`` on demand).
* Lists: ``pagination`` with ``total_results``, ``total_pages``, ``first``, ``last``, ``next``
  (null on the last page), ``previous``, and absolute ``href`` links.

Every request is logged in ``requests`` (method, path). Tests set state directly (``add_org``,
``add_space``, ``add_user``, ``add_role``, ``delete_role``) and read it back the same way
(``space_roles``, ``org_roles``), never through the driver; ``fail_next`` injects an error
(e.g. 429 with Retry-After), ``expire_tokens`` makes every issued token invalid.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
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


@dataclass
class World:
    lock: threading.RLock = field(default_factory=threading.RLock)
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    token_lifetime: int = 3600
    job_mode: str = "complete"
    """``complete``: a job is done at its first poll; ``processing``: PROCESSING once first;
    ``fail``: the job FAILS and the role stays."""
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
        presentation_name=user["username"],
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


def _list_users(world: World, path: str, query: dict[str, str]) -> dict[str, Any]:
    guids, names, origins = _csv(query, "guids"), _csv(query, "usernames"), _csv(query, "origins")
    if origins is not None and names is None:
        raise ApiError(400, "CF-UnprocessableEntity", "Origins filter requires usernames", 10008)

    def same(a: str, b: str) -> bool:
        return a == b if world.case_sensitive_usernames else a.lower() == b.lower()

    users = [
        u
        for u in sorted(world.users.values(), key=lambda u: u["seq"])
        if (guids is None or u["guid"] in guids)
        and (names is None or any(same(u["username"], n) for n in names))
        and (origins is None or u["origin"] in origins)
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
        for r in sorted(world.roles.values(), key=lambda r: r["seq"])
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


def _create_role(world: World, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "CF-MessageParseError", "Request invalid due to parse error", 1001)
    role_type = body.get("type")
    rel = body.get("relationships") or {}
    user_guid = ((rel.get("user") or {}).get("data") or {}).get("guid")
    space_guid = ((rel.get("space") or {}).get("data") or {}).get("guid")
    org_guid = ((rel.get("organization") or {}).get("data") or {}).get("guid")
    if role_type not in SPACE_TYPES + ORG_TYPES:
        raise _unprocessable(f"Type must be one of the allowed types {sorted(SPACE_TYPES + ORG_TYPES)}")
    user = world.users.get(user_guid or "")
    if user is None:
        raise _unprocessable("Invalid user. Ensure that the user exists and you have access to it.")
    if role_type in SPACE_TYPES:
        space = world.spaces.get(space_guid or "")
        if space is None:
            raise _unprocessable("Invalid space. Ensure that the space exists and you have access to it.")
        held = [r for r in world.roles.values() if r["user"] == user_guid]
        if any(r.get("space") == space_guid and r["type"] == role_type for r in held):
            raise _unprocessable(
                f"User '{user['username']}' already has '{role_type}' role in space '{space['name']}'."
            )
        if not any(r.get("organization") == space["org"] for r in held):
            raise _unprocessable(
                "Users cannot be assigned roles in a space if they do not have a role in that space's "
                "organization."
            )
        role = {"type": role_type, "user": user_guid, "space": space_guid, "organization": None}
    else:
        org = world.orgs.get(org_guid or "")
        if org is None:
            raise _unprocessable(
                "Invalid organization. Ensure that the organization exists and you have access to it."
            )
        held = [r for r in world.roles.values() if r["user"] == user_guid]
        if any(r.get("organization") == org_guid and r["type"] == role_type for r in held):
            raise _unprocessable(
                f"User '{user['username']}' already has '{role_type}' role in organization '{org['name']}'."
            )
        role = {"type": role_type, "user": user_guid, "space": None, "organization": org_guid}
    role["guid"] = str(uuid.uuid4())
    role["seq"] = next(world.counter)
    world.roles[role["guid"]] = role
    return _role_json(world, role)


def _job(world: World, guid: str) -> dict[str, Any]:
    job = world.jobs.get(guid)
    if job is None:
        raise _not_found("Job")
    if job["state"] == "PROCESSING" and job["polls"] > 0:
        job["state"] = "COMPLETE"
        world.roles.pop(job["role"], None)
    job["polls"] += 1
    errors = []
    if job["state"] == "FAILED":
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
        state=job["state"],
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
            state = {"complete": "COMPLETE", "processing": "PROCESSING", "fail": "FAILED"}[world.job_mode]
            world.jobs[job_guid] = {"state": state, "role": role["guid"], "polls": 0}
            if state == "COMPLETE":
                world.roles.pop(role["guid"])
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
        data = json.dumps(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": lifetime,
                "scope": "cloud_controller.admin",
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
        return self._add("users", username=username, origin=origin)

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
            return sorted(
                (self.world.users[r["user"]]["username"], r["type"])
                for r in self.world.roles.values()
                if r.get(scope) == guid
            )

    def fail_next(self, method: str, path_pattern: str, code: int, retry_after: str | None = None) -> None:
        with self.world.lock:
            self.world.faults.append(Fault(method, path_pattern, code, retry_after))

    def expire_tokens(self) -> None:
        with self.world.lock:
            self.world.tokens.clear()

    def calls(self, method: str, path_regex: str) -> int:
        with self.world.lock:
            return sum(1 for m, p in self.world.requests if m == method and re.fullmatch(path_regex, p))
