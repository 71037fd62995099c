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
- Entra ID's replication lag (``lag`` seconds, ``arm_lag`` for ARM; ``catch_up()`` ends it): an
  object created through the API is missing from Graph reads and refused by ``members/$ref`` and by
  ARM for a while, as the real service does (sources in :mod:`tests.support.azure.graph` and
  :mod:`tests.support.azure.arm`, which hold the Graph and ARM routes with the other documented
  limits: 120 characters in a displayName filter, mailNickname's characters, member-vs-guest
  invitations, ``principalType``).
- Faults on demand: throttling (429/503 with Retry-After) for the next N matching requests, and
  Graph's throttling per app and tenant (``throttle_app``): every Graph request of the app is 429
  until the window ends, whatever it asks (learn.microsoft.com/graph/throttling and
  throttling-limits, "identity and access service limits": a budget per app per tenant).

Every request is logged in ``requests`` as ``(api, method, path)``.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.azure.arm import DEFINITIONS, ArmApi
from tests.support.azure.errors import ApiError as _Error
from tests.support.azure.errors import arm_error as _arm_error
from tests.support.azure.errors import graph_error as _graph_error
from tests.support.azure.graph import TENANT_DOMAIN, GraphApi
from tests.support.local_server import LocalHttpServer

TENANT_ID = "8f3c2a4e-1b7d-4c5e-9a6f-0d2e4b6c8a10"
CLIENT_ID = "2c1f9b7e-5d3a-4e8f-b6c2-7a9d0e1f3b54"
CLIENT_SECRET = "local-test-secret"
FEDERATED_ISSUER = "https://oidc.cluster.local.test"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
MSI_HEADER = "local-identity-header"


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
    created: dict[str, float] = field(default_factory=dict)
    deleted_users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Users deleted through Graph: Entra ID keeps them restorable among its deleted items for 30
    days (see graph.py), with the groups they were in."""
    """Object id -> time.monotonic() of its creation through the API (replication lag); seeded
    objects are known everywhere at once."""
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


class AzureServer(GraphApi, ArmApi, LocalHttpServer):
    """Graph + ARM + token endpoint on 127.0.0.1 over HTTPS, in a thread. Use as a context manager."""

    thread_name = "azure-local"
    scheme = "https"
    address_outlives_server = True

    def __init__(
        self, *, page_size: int = 100, arm_page_size: int = 50, lag: float = 0.0, arm_lag: float | None = None
    ) -> None:
        self.page_size = page_size
        """Most items a Graph page holds (Graph's default page is 100; ``$top`` may ask for fewer)."""
        self.arm_page_size = arm_page_size
        self.lag = lag
        """Seconds an object created through Graph stays unknown to Graph's reads and references."""
        self.arm_lag = arm_lag
        """Seconds a new principal stays unknown to ARM (None: ``lag``)."""
        self.tenant_id = TENANT_ID
        self.app_throttled_until = 0.0
        """time.monotonic() until which every Graph request of the app is 429 (``throttle_app``)."""
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
            self.lag, self.arm_lag, self.app_throttled_until = 0.0, None, 0.0

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
            "pendingRetryAfter": 1,
        }
        options.update(extra)
        return options

    # --- seeding and reading back (tests) -------------------------------------------------------

    def add_user(
        self,
        mail: str | None,
        upn: str | None = None,
        user_type: str = "Member",
        display: str | None = None,
        other_mails: tuple[str, ...] = (),
    ) -> str:
        uid = str(uuid.uuid4())
        local = (mail or upn or uid).split("@")[0]
        with self._lock:
            self.state.users[uid] = {
                "id": uid,
                "displayName": display or local,
                "mail": mail,
                "otherMails": list(other_mails),
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
            "roleDefinitionId": f"/subscriptions/{sub}{DEFINITIONS}/{role}",
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

    def throttle_app(self, seconds: float) -> None:
        """Graph's budget of this app in this tenant is spent for ``seconds``: every Graph request
        answers 429 with the Retry-After left (whole seconds, at least 1), whatever it asks."""
        with self._lock:
            self.app_throttled_until = time.monotonic() + seconds

    def catch_up(self) -> None:
        """Every replica has caught up: objects created so far are known to Graph and ARM."""
        with self._lock:
            self.state.created.clear()

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
            left = self.app_throttled_until - time.monotonic()
            if api == "graph" and left > 0:
                raise _graph_error(
                    429,
                    "TooManyRequests",
                    "Too many requests (this application in this tenant).",
                    {"Retry-After": str(max(1, math.ceil(left)))},
                )
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

    def iter_requests(self) -> Iterator[tuple[str, str, str]]:
        with self._lock:
            yield from list(self.requests)
