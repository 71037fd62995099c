"""A local stand-in for Microsoft Graph v1.0, Azure Resource Manager (role assignments) and the Entra
ID token endpoint, speaking their documented JSON over HTTPS for exactly the calls the Azure driver
makes. No Graph emulator exists; the real SDKs (msgraph-sdk, azure-mgmt-authorization,
azure-identity/MSAL) are driven against this server over real HTTP.

What it implements, with the platform's semantics:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials with a client secret, a certificate's client assertion, or a workload
  identity's federated token from ``FEDERATED_ISSUER``), and App Service's managed identity
  endpoint ``GET /msi/token``; every Graph and ARM request must carry a token it issued (else 401).
- Graph ``/v1.0``: ``GET /users`` with ``$filter`` (``eq`` / ``in (...)`` over ``mail``,
  ``userPrincipalName``; at most 15 values; string literals with doubled quotes; case-insensitive
  like Graph), ``$select``, ``$top`` and ``@odata.nextLink`` paging; ``GET /groups?$filter=
  displayName eq '...'`` or ``id in (...)`` (at most 15 ids); ``POST /groups`` (mailNickname
  checked), ``GET``/``DELETE /groups/{id}``; ``GET /groups/{id}/members`` (paged, ``@odata.type``
  per member); ``POST /groups/{id}/members/$ref`` (an existing member: 400 "already exist");
  ``DELETE /groups/{id}/members/{id}/$ref``;
  ``POST /invitations`` (a guest with ``mail`` = the address, ``userPrincipalName`` rewritten to
  ``x_domain#EXT#@...``; the existing guest when the address was invited before);
  ``POST /directory/administrativeUnits/{id}/members`` creating a group inside the unit.
- ARM: ``PUT``/``DELETE {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`` and
  ``GET {scope}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq '...'``
  (assignments at, above and below the scope, like ARM), or ``$filter=atScope()`` (at the scope
  or above it, not below); paged with ``nextLink``; a second assignment of the same role to the
  same principal on a scope is 409 ``RoleAssignmentExists``.
- Faults on demand: throttling (429/503 with Retry-After) for the next N matching requests, and
  Entra ID's replication lag: a group or guest created here is unknown to ``members/$ref`` (404) and
  to ARM (400 ``PrincipalNotFound``) for its first ``replication_lag`` references.

Every request is logged in ``requests`` as ``(api, method, path)``.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import secrets
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from tests.support.local_server import LocalHttpServer

TENANT_ID = "8f3c2a4e-1b7d-4c5e-9a6f-0d2e4b6c8a10"
TENANT_DOMAIN = "workload.onmicrosoft.com"
CLIENT_ID = "2c1f9b7e-5d3a-4e8f-b6c2-7a9d0e1f3b54"
CLIENT_SECRET = "local-test-secret"
GRAPH_MAX_IN = 15
FEDERATED_ISSUER = "https://oidc.cluster.local.test"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
MSI_HEADER = "local-identity-header"

_ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments"
_DEFINITIONS = "/providers/Microsoft.Authorization/roleDefinitions"
_SCOPE = r"(/subscriptions/[^/]+(?:/resourceGroups/[^/]+)?)"


@dataclass
class Fault:
    """Answer the next ``count`` requests matching ``method`` and ``path`` (regex) with ``status``."""

    method: str
    path: str
    status: int = 429
    retry_after: str | None = "1"
    count: int = 1


@dataclass
class _State:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    unit_members: dict[str, list[str]] = field(default_factory=dict)
    assignments: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Assignment id (lower case) -> ARM JSON."""
    invitations: list[dict[str, Any]] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    """Object id -> references still refused (replication lag)."""
    tokens: set[str] = field(default_factory=set)


def _self_signed(key: Any, common_name: str, *extensions: tuple[Any, bool]) -> Any:
    """A certificate for ``key`` signed by itself, valid from five minutes ago for two days, with
    ``extensions`` (each ``(extension, critical)``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256())


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key (also the CA file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = _self_signed(
        key,
        "azure-local-test",
        (x509.SubjectAlternativeName(names), False),
        (x509.BasicConstraints(ca=True, path_length=None), True),
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path


def client_certificate(directory: Path) -> Path:
    """A PEM file with a client certificate and its private key (for CertificateCredential)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _self_signed(key, "replicator-client")
    path = directory / "client.pem"
    path.write_bytes(_key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
    return path


def federated_token(issuer: str = FEDERATED_ISSUER, subject: str = "system:serviceaccount:ops:rep") -> str:
    """A token like the one a cluster projects for workload identity (the signature is not checked
    here; Entra ID checks it against the issuer's keys)."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    claims = {"iss": issuer, "sub": subject, "aud": FEDERATED_AUDIENCE, "iat": now, "exp": now + 3600}
    return f"{part({'alg': 'RS256', 'kid': 'cluster-key'})}.{part(claims)}.c2lnbmF0dXJl"


class _Error(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _graph_error(status: int, code: str, message: str) -> _Error:
    return _Error(status, {"error": {"code": code, "message": message, "innerError": {}}})


def _arm_error(status: int, code: str, message: str) -> _Error:
    return _Error(status, {"error": {"code": code, "message": message}})


_LITERAL = r"'(?:[^']|'')*'"


def _literal(text: str) -> str:
    return text[1:-1].replace("''", "'")


def parse_filter(expression: str) -> tuple[str, list[str]]:
    """``attr eq 'v'`` or ``attr in ('a', 'b')`` -> (attr, values); anything else is a 400 like
    Graph's for an unsupported query."""
    m = re.fullmatch(rf"\s*(\w+)\s+eq\s+({_LITERAL})\s*", expression)
    if m:
        return m.group(1), [_literal(m.group(2))]
    m = re.fullmatch(rf"\s*(\w+)\s+in\s+\(\s*({_LITERAL}(?:\s*,\s*{_LITERAL})*)\s*\)\s*", expression)
    if m:
        values = [_literal(v) for v in re.findall(_LITERAL, m.group(2))]
        if len(values) > GRAPH_MAX_IN:
            raise _graph_error(
                400,
                "Request_UnsupportedQuery",
                "Too many child clauses specified in search filter expression containing 'OR' "
                f"operators: {len(values)}. Max allowed: {GRAPH_MAX_IN}.",
            )
        return m.group(1), values
    raise _graph_error(400, "Request_UnsupportedQuery", f"Unsupported query: {expression!r}")


class AzureServer(LocalHttpServer):
    """Graph + ARM + token endpoint on 127.0.0.1 over HTTPS, in a thread. Use as a context manager."""

    thread_name = "azure-local"
    scheme = "https"
    address_outlives_server = True

    def __init__(self, *, page_size: int = 100, arm_page_size: int = 50, replication_lag: int = 0) -> None:
        self.page_size = page_size
        """Most items a Graph page holds (Graph's default page is 100; ``$top`` may ask for fewer)."""
        self.arm_page_size = arm_page_size
        self.replication_lag = replication_lag
        """References a just-created group or guest is refused before Entra ID "knows" it."""
        self.state = _State()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self._lock = threading.RLock()
        self._dir = tempfile.TemporaryDirectory(prefix="azure-local-")
        self.directory = Path(self._dir.name)
        self.cert_file, key_file = _cert_files(self.directory)
        self.ca_file = str(self.cert_file)
        self._key_file = key_file
        self._bind()

    # --- lifecycle ------------------------------------------------------------------------------

    def _make_server(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
    ) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(address, handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self._key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        return server

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        self._dir.cleanup()

    def reset(self) -> None:
        with self._lock:
            self.state = _State()
            self.faults.clear()
            self.requests.clear()
            self.token_requests.clear()
            self.replication_lag = 0

    # --- driver settings ------------------------------------------------------------------------

    def driver_options(self, **extra: Any) -> dict[str, Any]:
        """The ``azure:`` block pointing the driver at this server (secret from $AZURE_TEST_SECRET)."""
        options: dict[str, Any] = {
            "tenantId": TENANT_ID,
            "credentials": {"clientId": CLIENT_ID, "clientSecret": {"env": "AZURE_TEST_SECRET"}},
            "graphUrl": self.url,
            "armUrl": self.url,
            "authorityHost": self.url,
            "caFile": self.ca_file,
            "consistencyWait": 0.01,
        }
        options.update(extra)
        return options

    # --- seeding and reading back (tests) -------------------------------------------------------

    def add_user(
        self, mail: str | None, upn: str | None = None, user_type: str = "Member", display: str | None = None
    ) -> str:
        uid = str(uuid.uuid4())
        local = (mail or upn or uid).split("@")[0]
        with self._lock:
            self.state.users[uid] = {
                "id": uid,
                "displayName": display or local,
                "mail": mail,
                "userPrincipalName": upn or (mail if mail else f"{local}@{TENANT_DOMAIN}"),
                "userType": user_type,
            }
        return uid

    def add_group(self, name: str, description: str | None = None) -> str:
        gid = str(uuid.uuid4())
        with self._lock:
            self.state.groups[gid] = {
                "id": gid,
                "displayName": name,
                "description": description,
                "mailNickname": re.sub(r"[^A-Za-z0-9._-]", "-", name)[:64],
                "mailEnabled": False,
                "securityEnabled": True,
            }
            self.state.members[gid] = []
        return gid

    def set_description(self, group_id: str, description: str | None) -> None:
        """Change a group's description as someone editing it by hand would."""
        with self._lock:
            self.state.groups[group_id]["description"] = description

    def add_member(self, group_id: str, member_id: str) -> None:
        with self._lock:
            if member_id not in self.state.members[group_id]:
                self.state.members[group_id].append(member_id)

    def add_assignment(self, scope: str, principal_id: str, role: str, name: str | None = None) -> str:
        """A role assignment made outside the replicator (``role``: a role definition GUID)."""
        name = name or str(uuid.uuid4())
        sub = scope.split("/")[2]
        body = {
            "roleDefinitionId": f"/subscriptions/{sub}{_DEFINITIONS}/{role}",
            "principalId": principal_id,
            "principalType": "Group",
        }
        with self._lock:
            self._put_assignment(scope, name, body)
        return name

    def groups(self) -> dict[str, list[str]]:
        """displayName -> ids (Entra ID does not keep names unique)."""
        with self._lock:
            out: dict[str, list[str]] = {}
            for g in self.state.groups.values():
                out.setdefault(g["displayName"], []).append(g["id"])
            return out

    def group(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.state.groups[group_id])

    def group_id(self, name: str) -> str:
        ids = self.groups().get(name, [])
        if len(ids) != 1:
            raise AssertionError(f"{len(ids)} groups named {name!r}")
        return ids[0]

    def members(self, group_id: str) -> list[str]:
        with self._lock:
            return list(self.state.members.get(group_id, []))

    def member_mails(self, group_id: str) -> list[str]:
        with self._lock:
            return sorted(
                str(self.state.users[m]["mail"] or m) if m in self.state.users else m
                for m in self.state.members.get(group_id, [])
            )

    def assignments(self, principal_id: str | None = None, scope: str | None = None) -> list[dict[str, Any]]:
        """ARM JSON of assignments, filtered by principal and exact scope."""
        with self._lock:
            rows = [dict(a) for a in self.state.assignments.values()]
        return [
            a
            for a in rows
            if (principal_id is None or a["properties"]["principalId"] == principal_id)
            and (scope is None or a["properties"]["scope"].lower() == scope.lower())
        ]

    def roles(self, principal_id: str, scope: str) -> list[str]:
        """Role definition GUIDs assigned to the principal on exactly ``scope``."""
        return sorted(
            a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
            for a in self.assignments(principal_id, scope)
        )

    def user_by_mail(self, mail: str) -> dict[str, Any] | None:
        with self._lock:
            users = [dict(u) for u in self.state.users.values()]
        return next((u for u in users if (u["mail"] or "").lower() == mail.lower()), None)

    def count(self, api: str | None = None, method: str | None = None, path: str | None = None) -> int:
        """Requests logged, filtered by api (graph/arm/token), method and a path regex."""
        with self._lock:
            rows = list(self.requests)
        return sum(
            1
            for a, m, p in rows
            if (api is None or a == api)
            and (method is None or m == method)
            and (path is None or re.search(path, p))
        )

    def throttle(
        self, method: str, path: str, count: int = 1, status: int = 429, retry_after: str | None = "1"
    ) -> None:
        with self._lock:
            self.faults.append(Fault(method, path, status, retry_after, count))

    # --- request handling -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                # Headers and body leave in two writes: without this, Nagle + delayed ACK add ~40 ms.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str) -> None:
                raw = self._body()
                try:
                    status, body, headers = server._route(method, self.path, dict(self.headers), raw)
                except _Error as e:
                    status, body, headers = e.status, e.body, e.headers
                except Exception as e:  # a bug here must show in the test, not hang it
                    status, body, headers = 500, {"error": {"code": "ServerBug", "message": repr(e)}}, {}
                self._send(status, body, headers)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

        return Handler

    def _route(
        self, method: str, raw_path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        api = "token"
        if path.startswith("/v1.0/"):
            api = "graph"
        elif path.startswith("/subscriptions/"):
            api = "arm"
        with self._lock:
            self.requests.append((api, method, path))
            for fault in self.faults:
                if fault.count > 0 and fault.method == method and re.search(fault.path, path):
                    fault.count -= 1
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    if api == "arm":
                        raise _Error(
                            fault.status,
                            {"error": {"code": "TooManyRequests", "message": "throttled"}},
                            extra,
                        )
                    raise _Error(
                        fault.status,
                        {"error": {"code": "TooManyRequests", "message": "Too many requests"}},
                        extra,
                    )
        if api == "token" and path == "/msi/token":
            return self._managed_identity(query, headers)
        if api == "token":
            return self._token(method, path, raw)
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        with self._lock:
            if not auth.startswith("Bearer ") or auth[7:] not in self.state.tokens:
                if api == "graph":
                    raise _graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
                raise _arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        body: Any = json.loads(raw) if raw else None
        with self._lock:
            if api == "graph":
                return self._graph(method, path[len("/v1.0") :], query, body)
            return self._arm(method, path, query, body)

    # --- token endpoint -------------------------------------------------------------------------

    def _managed_identity(
        self, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """App Service's managed identity endpoint (``$IDENTITY_ENDPOINT``, ``$IDENTITY_HEADER``)."""
        secret = {k.lower(): v for k, v in headers.items()}.get("x-identity-header")
        if secret != MSI_HEADER or query.get("api-version") != "2019-08-01" or not query.get("resource"):
            raise _Error(400, {"error": "invalid_request", "error_description": "bad identity request"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.state.tokens.add(token)
            self.token_requests.append({"managed_identity": query["resource"]})
        expires = int(datetime.datetime.now(datetime.UTC).timestamp()) + 3600
        answer = {
            "access_token": token,
            "expires_on": str(expires),
            "resource": query["resource"],
            "token_type": "Bearer",
        }
        return 200, answer, {}

    def _token(self, method: str, path: str, raw: bytes) -> tuple[int, Any, dict[str, str]]:
        m = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", path)
        if m and method == "GET":
            base = f"{self.url}/{m.group(1)}"
            return (
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
                {},
            )
        m = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path)
        if not m or method != "POST":
            raise _Error(404, {"error": "not_found", "error_description": f"no route {method} {path}"})
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        with self._lock:
            self.token_requests.append({k: v for k, v in form.items() if k != "client_secret"})
        if m.group(1) not in (TENANT_ID, TENANT_DOMAIN):
            raise _Error(400, {"error": "invalid_request", "error_description": "AADSTS90002: no tenant"})
        if form.get("grant_type") != "client_credentials" or form.get("client_id") != CLIENT_ID:
            raise _Error(400, {"error": "unauthorized_client", "error_description": "AADSTS700016: no app"})
        assertion = form.get("client_assertion")
        if assertion is not None:
            parts = assertion.split(".")[:2]
            header, payload = (json.loads(base64.urlsafe_b64decode(x + "==")) for x in parts)
            certificate = "x5t" in header or "x5t#S256" in header
            # Workload identity: a federated token Entra ID trusts by issuer and audience.
            federated = payload.get("iss") == FEDERATED_ISSUER and payload.get("aud") == FEDERATED_AUDIENCE
            if not (certificate or federated):
                raise _Error(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS70021: No matching federated "
                        "identity record found for presented assertion.",
                    },
                )
        elif form.get("client_secret") != CLIENT_SECRET:
            raise _Error(
                401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."}
            )
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.state.tokens.add(token)
        answer = {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        return 200, answer, {}

    # --- Graph ----------------------------------------------------------------------------------

    def _page(self, path: str, query: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, Any]:
        top = min(int(query.get("$top") or self.page_size), self.page_size)
        start = int(base64.urlsafe_b64decode(query["$skiptoken"]).decode()) if "$skiptoken" in query else 0
        page: dict[str, Any] = {"value": rows[start : start + top]}
        if start + top < len(rows):
            following = dict(query)
            following["$skiptoken"] = base64.urlsafe_b64encode(str(start + top).encode()).decode()
            page["@odata.nextLink"] = f"{self.url}/v1.0{path}?{urlencode(following, quote_via=quote)}"
        return page

    @staticmethod
    def _select(row: dict[str, Any], query: dict[str, str], odata_type: str | None = None) -> dict[str, Any]:
        fields = [f.strip() for f in query.get("$select", "").split(",") if f.strip()]
        out = {k: row.get(k) for k in fields} if fields else dict(row)
        out["id"] = row["id"]
        if odata_type:
            out["@odata.type"] = odata_type
        return out

    def _filter(self, query: dict[str, str], allowed: tuple[str, ...]) -> tuple[str, list[str]] | None:
        if "$filter" not in query:
            return None
        attribute, values = parse_filter(query["$filter"])
        if attribute not in allowed:
            raise _graph_error(400, "Request_UnsupportedQuery", f"filter on {attribute!r} is not supported")
        return attribute, values

    def _graph(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        st = self.state
        if path == "/users" and method == "GET":
            flt = self._filter(query, ("mail", "userPrincipalName"))
            rows = list(st.users.values())
            if flt is not None:
                attribute, values = flt
                wanted = {v.lower() for v in values}
                rows = [u for u in rows if (u.get(attribute) or "").lower() in wanted]
            return 200, self._page(path, query, [self._select(u, query) for u in rows]), {}
        if path == "/groups" and method == "GET":
            flt = self._filter(query, ("displayName", "id"))
            rows = list(st.groups.values())
            if flt is not None:
                attribute, values = flt
                wanted = {v.lower() for v in values}
                rows = [g for g in rows if g[attribute].lower() in wanted]
            return 200, self._page(path, query, [self._select(g, query) for g in rows]), {}
        if path == "/groups" and method == "POST":
            return 201, self._create_group(body), {}
        m = re.fullmatch(r"/directory/administrativeUnits/([^/]+)/members", path)
        if m and method == "POST":
            if body.get("@odata.type") != "#microsoft.graph.group":
                raise _graph_error(400, "Request_BadRequest", "only groups are created here by this server")
            group = self._create_group(body)
            st.unit_members.setdefault(m.group(1), []).append(group["id"])
            return 201, group, {}
        m = re.fullmatch(r"/groups/([^/]+)", path)
        if m:
            group = st.groups.get(m.group(1))
            if group is None:
                raise _graph_error(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{m.group(1)}' does not exist or one of its "
                    "queried reference-property objects are not present.",
                )
            if method == "GET":
                return 200, self._select(group, query), {}
            if method == "DELETE":
                del st.groups[group["id"]]
                st.members.pop(group["id"], None)
                for ids in st.members.values():
                    if group["id"] in ids:
                        ids.remove(group["id"])
                return 204, None, {}
        m = re.fullmatch(r"/groups/([^/]+)/members", path)
        if m and method == "GET":
            gid = m.group(1)
            if gid not in st.groups:
                raise _graph_error(404, "Request_ResourceNotFound", f"Resource '{gid}' does not exist.")
            rows = []
            for mid in st.members[gid]:
                if mid in st.users:
                    rows.append(self._select(st.users[mid], query, "#microsoft.graph.user"))
                elif mid in st.groups:
                    rows.append(self._select(st.groups[mid], query, "#microsoft.graph.group"))
            return 200, self._page(path, query, rows), {}
        m = re.fullmatch(r"/groups/([^/]+)/members/\$ref", path)
        if m and method == "POST":
            gid = m.group(1)
            ref = str((body or {}).get("@odata.id") or "")
            mid = ref.rstrip("/").rsplit("/", 1)[-1]
            if not re.fullmatch(r"https://[^/]+/v1\.0/directoryObjects/[^/]+", ref):
                raise _graph_error(400, "Request_BadRequest", f"Invalid object reference {ref!r}")
            for oid in (gid, mid):
                if (oid not in st.groups and oid not in st.users) or self._lagging(oid):
                    raise _graph_error(
                        404,
                        "Request_ResourceNotFound",
                        f"Resource '{oid}' does not exist or one of its "
                        "queried reference-property objects are not present.",
                    )
            if mid in st.members[gid]:
                raise _graph_error(
                    400,
                    "Request_BadRequest",
                    "One or more added object references already exist for the "
                    "following modified properties: 'members'.",
                )
            st.members[gid].append(mid)
            return 204, None, {}
        m = re.fullmatch(r"/groups/([^/]+)/members/([^/]+)/\$ref", path)
        if m and method == "DELETE":
            gid, mid = m.group(1), m.group(2)
            if gid not in st.groups or mid not in st.members[gid]:
                raise _graph_error(404, "Request_ResourceNotFound", f"Resource '{mid}' does not exist.")
            st.members[gid].remove(mid)
            return 204, None, {}
        if path == "/invitations" and method == "POST":
            return 201, self._invite(body), {}
        raise _graph_error(400, "BadRequest", f"Resource not found for the segment in {method} {path}")

    def _lagging(self, object_id: str) -> bool:
        left = self.state.lag.get(object_id, 0)
        if left > 0:
            self.state.lag[object_id] = left - 1
            return True
        return False

    def _create_group(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("displayName", "mailNickname", "mailEnabled", "securityEnabled"):
            if key not in body:
                raise _graph_error(400, "Request_BadRequest", f"A value is required for property '{key}'.")
        nick = str(body["mailNickname"])
        if not nick or len(nick) > 64 or re.search(r"[^\x21-\x7e]|[@()\\\[\]\";:<>,]", nick):
            raise _graph_error(400, "Request_BadRequest", "Invalid value for property 'mailNickname'.")
        if len(str(body["displayName"])) > 256:
            raise _graph_error(400, "Request_BadRequest", "Invalid value for property 'displayName'.")
        gid = str(uuid.uuid4())
        group = {
            "id": gid,
            "displayName": body["displayName"],
            "description": body.get("description"),
            "mailNickname": nick,
            "mailEnabled": bool(body["mailEnabled"]),
            "securityEnabled": bool(body["securityEnabled"]),
        }
        self.state.groups[gid] = group
        self.state.members[gid] = []
        if self.replication_lag:
            self.state.lag[gid] = self.replication_lag
        return dict(group)

    def _invite(self, body: dict[str, Any]) -> dict[str, Any]:
        address = str(body.get("invitedUserEmailAddress") or "")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
            raise _graph_error(400, "BadRequest", "The invited user email address is invalid.")
        if not body.get("inviteRedirectUrl"):
            raise _graph_error(400, "BadRequest", "InviteRedirectUrl is required.")
        self.state.invitations.append(dict(body))
        existing = next(
            (u for u in self.state.users.values() if (u["mail"] or "").lower() == address.lower()), None
        )
        if existing is None:
            uid = str(uuid.uuid4())
            upn = address.replace("@", "_") + "#EXT#@" + TENANT_DOMAIN
            existing = {
                "id": uid,
                "displayName": address.split("@")[0],
                "mail": address,
                "userPrincipalName": upn,
                "userType": "Guest",
            }
            self.state.users[uid] = existing
            if self.replication_lag:
                self.state.lag[uid] = self.replication_lag
        return {
            "id": str(uuid.uuid4()),
            "invitedUserEmailAddress": address,
            "inviteRedirectUrl": body["inviteRedirectUrl"],
            "sendInvitationMessage": bool(body.get("sendInvitationMessage")),
            "status": "PendingAcceptance",
            "invitedUser": {"id": existing["id"]},
        }

    # --- ARM ------------------------------------------------------------------------------------

    def _arm(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if not query.get("api-version"):
            raise _arm_error(400, "MissingApiVersionParameter", "The api-version parameter is required.")
        m = re.fullmatch(rf"{_SCOPE}{_ASSIGNMENTS}/([^/]+)", path, re.I)
        if m:
            scope, name = m.group(1), m.group(2)
            key = f"{scope}{_ASSIGNMENTS}/{name}".lower()
            if method == "PUT":
                props = (body or {}).get("properties") or {}
                principal = str(props.get("principalId") or "")
                known = principal in self.state.groups or principal in self.state.users
                if not known or self._lagging(principal):
                    raise _arm_error(
                        400,
                        "PrincipalNotFound",
                        f"Principal {principal.replace('-', '')} does not exist in "
                        f"the directory {TENANT_ID}. Check that you have the correct principal ID.",
                    )
                existing = self.state.assignments.get(key)
                if existing is not None:
                    same = (
                        existing["properties"]["principalId"] == principal
                        and existing["properties"]["roleDefinitionId"].lower()
                        == str(props.get("roleDefinitionId")).lower()
                    )
                    if not same:
                        raise _arm_error(
                            409,
                            "RoleAssignmentUpdateNotPermitted",
                            "Tenant ID, application ID, principal ID, and scope cannot be updated.",
                        )
                    return 201, existing, {}
                return 201, self._put_assignment(scope, name, props), {}
            if method == "GET":
                if key not in self.state.assignments:
                    raise _arm_error(404, "RoleAssignmentNotFound", "The role assignment does not exist.")
                return 200, self.state.assignments[key], {}
            if method == "DELETE":
                existing = self.state.assignments.pop(key, None)
                return (200, existing, {}) if existing is not None else (204, None, {})
        m = re.fullmatch(rf"{_SCOPE}{_ASSIGNMENTS}", path, re.I)
        if m and method == "GET":
            scope = m.group(1).lower()
            principal = None
            at_scope = False  # atScope(): at the scope or above it (not below), like ARM
            if query.get("$filter"):
                fm = re.fullmatch(rf"\s*principalId\s+eq\s+({_LITERAL})\s*", query["$filter"])
                if fm:
                    principal = _literal(fm.group(1))
                elif re.fullmatch(r"\s*atScope\(\)\s*", query["$filter"]):
                    at_scope = True
                else:
                    raise _arm_error(400, "InvalidFilter", f"unsupported $filter {query['$filter']!r}")
            rows = [
                a
                for a in self.state.assignments.values()
                if (principal is None or a["properties"]["principalId"] == principal)
                and (
                    scope.startswith(a["properties"]["scope"].lower() + "/")
                    or a["properties"]["scope"].lower() == scope
                    or (not at_scope and a["properties"]["scope"].lower().startswith(scope + "/"))
                )
            ]
            rows.sort(key=lambda a: a["id"])
            start = int(query.get("$skiptoken") or 0)
            page: dict[str, Any] = {"value": rows[start : start + self.arm_page_size]}
            if start + self.arm_page_size < len(rows):
                following = dict(query)
                following["$skiptoken"] = str(start + self.arm_page_size)
                page["nextLink"] = f"{self.url}{m.group(0)}?{urlencode(following, quote_via=quote)}"
            return 200, page, {}
        raise _arm_error(404, "NotFound", f"no route {method} {path}")

    def _put_assignment(self, scope: str, name: str, props: dict[str, Any]) -> dict[str, Any]:
        role = str(props.get("roleDefinitionId") or "")
        if not re.fullmatch(r".*/providers/Microsoft\.Authorization/roleDefinitions/[0-9a-fA-F-]{36}", role):
            raise _arm_error(400, "InvalidRoleDefinitionId", f"The role definition ID '{role}' is not valid.")
        principal = str(props.get("principalId"))
        guid = role.rsplit("/", 1)[-1].lower()
        for other in self.state.assignments.values():
            p = other["properties"]
            if (
                p["principalId"] == principal
                and p["scope"].lower() == scope.lower()
                and p["roleDefinitionId"].rsplit("/", 1)[-1].lower() == guid
            ):
                raise _arm_error(409, "RoleAssignmentExists", "The role assignment already exists.")
        assignment_id = f"{scope}{_ASSIGNMENTS}/{name}"
        row = {
            "id": assignment_id,
            "name": name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": role,
                "principalId": principal,
                "principalType": props.get("principalType") or "Group",
                "scope": scope,
                "description": props.get("description"),
                "createdOn": datetime.datetime.now(datetime.UTC).isoformat(),
            },
        }
        self.state.assignments[assignment_id.lower()] = row
        return row

    def iter_requests(self) -> Iterator[tuple[str, str, str]]:
        with self._lock:
            yield from list(self.requests)
