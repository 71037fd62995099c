"""Hostile input through every HTTP endpoint of one daemon (SCIM, the object API, the OIDC login,
triggers, status): a corpus of bodies that broke or strained parsers elsewhere (deep nesting, huge
values, bytes that are not UTF-8, numbers JSON cannot hold, lone surrogates, YAML entity
expansion, duplicate keys) and hypothesis-generated bodies, query strings and path segments.

Every answer is a 4xx (or a 2xx) with a JSON body; none is a 5xx; no log line carries a traceback
or an exception, in structlog's stream or in the standard library's (uvicorn's)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.support.daemons import daemon_in_thread
from tests.support.oidc_issuer import AUDIENCE, OidcIssuer

SCIM_TOKEN = "hostile-scim-token-51f0"
API_KEY = "hostile-api-key-7c2e"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


BILLION_LAUGHS = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
kind: meshUser
metadata: {name: *f}
"""

CORPUS: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"\xff\xfe\x00{",
    b"\xef\xbb\xbf{}",
    b"{not json",
    b'{"userName": "\\ud800"}',
    b'{"userName": 1e999999}',
    b'{"userName": -0, "active": NaN}',
    b'{"a": 1, "a": 2, "schemas": 5}',
    b'"just a string"',
    b"9" * 5000,
    _deep(40),
    _deep(5000),
    b"[" * 100_000,
    b'{"userName": "' + b"x" * 300_000 + b'"}',
    b'{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "\\u0000\\u202e"}',
    b'{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": {"$ne": null}}',
    b'{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "a", "emails": "x"}',
    b'{"schemas": ["'
    + PATCH.encode()
    + b'"], "Operations": [{"op": "add", "path": "members[", "value": 1}]}',
    b'{"schemas": ["' + PATCH.encode() + b'"], "Operations": [{"op": "replace", "value": [[[]]]}]}',
    b'{"schemas": ["' + PATCH.encode() + b'"], "Operations": "all"}',
    b'{"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "' + b"(" * 2000 + b'"}',
    BILLION_LAUGHS,
    b"kind: meshUser\nmetadata: {name: !!python/object/apply:os.system [id]}\n",
    b"- " * 3000 + b"x",
    b"a: b\n\tc: d\n",
    b"id_token=" + b"A" * 70_000,
    b"id_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    b"grant_type=%ZZ&id_token=%00",
]

QUERIES = [
    "",
    "filter=userName%20eq",
    "filter=" + "(" * 500,
    "attributes=nosuch.attr",
    "count=-1&startIndex=99999999999999999999999",
    "tenant=%00%ff",
    "force=maybe",
    "kind=meshUser&source=" + "x" * 5000,
    "a=" * 2000,
]


def _config(root: Path, issuer: str) -> Path:
    (root / "inventory").mkdir()
    (root / "inventory" / "org.yaml").write_text(
        yaml.safe_dump({"kind": "meshWorkspace", "metadata": {"name": "ws"}})
    )
    config = {
        "state": "sqlite:///state.db",
        "inventory": ["inventory"],
        "storedObjects": True,
        "identity": {
            "scim": {"enabled": True, "token": {"env": "HOSTILE_SCIM_TOKEN"}},
            "oidc": [{"name": "corp", "issuer": issuer, "audience": [AUDIENCE], "claims": {"euid": "email"}}],
        },
        "api": {"keys": [{"name": "ops", "secret": {"env": "HOSTILE_API_KEY"}, "scopes": ["admin"]}]},
    }
    if shutil.which("xmlsec1"):  # SAML login too (test_saml_login.py says why it may be missing)
        from tests.support.saml_idp import SP_ENTITY, SamlIdp

        idp = SamlIdp(root, "http://127.0.0.1:9/v1/saml/corp/acs")
        config["identity"]["saml"] = [  # type: ignore[index]
            {"name": "corp", "idpMetadata": idp.metadata_file.name, "spEntityId": SP_ENTITY,
             "acsUrl": "http://127.0.0.1:9/v1/saml/corp/acs"}
        ]  # fmt: skip
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Served:
    def __init__(self, base: str, user: str, group: str) -> None:
        self.base, self.user, self.group = base, user, group

    def endpoints(self) -> list[tuple[str, str, str | None, str]]:
        """(method, path, bearer, content type) of every endpoint that takes input."""
        scim, api = SCIM_TOKEN, API_KEY
        json_type, scim_type = "application/json", "application/scim+json"
        return [
            ("POST", "/scim/v2/Users", scim, scim_type),
            ("POST", "/scim/v2/Groups", scim, scim_type),
            ("PUT", f"/scim/v2/Users/{self.user}", scim, scim_type),
            ("PATCH", f"/scim/v2/Users/{self.user}", scim, scim_type),
            ("PATCH", f"/scim/v2/Groups/{self.group}", scim, scim_type),
            ("POST", "/scim/v2/.search", scim, scim_type),
            ("POST", "/scim/v2/Users/.search", scim, scim_type),
            ("GET", "/scim/v2/Users", scim, scim_type),
            ("GET", f"/scim/v2/Groups/{self.group}", scim, scim_type),
            ("PUT", "/api/meshobjects", api, "application/yaml"),
            ("PUT", "/api/meshobjects", api, json_type),
            ("GET", "/api/meshobjects", api, json_type),
            ("GET", "/api/meshobjects/meshUser", api, json_type),
            ("DELETE", "/api/meshobjects/meshUser/nobody", api, json_type),
            ("POST", "/v1/login/corp", None, "application/x-www-form-urlencoded"),
            ("POST", "/v1/login/corp", None, json_type),
            ("POST", "/v1/login/corp", "not.a.token", json_type),
            ("POST", "/v1/reconcile", api, json_type),
            ("POST", "/v1/tenants/ws/p/nowhere/reconcile", api, json_type),
            ("GET", "/v1/status", api, json_type),
            *(
                [
                    ("POST", "/v1/saml/corp/acs", None, "application/x-www-form-urlencoded"),
                    ("POST", "/v1/saml/corp/acs", None, json_type),
                    ("GET", "/v1/saml/corp/metadata", None, json_type),
                ]
                if shutil.which("xmlsec1")
                else []
            ),
        ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with pytest.MonkeyPatch.context() as mp, OidcIssuer() as issuer:
        mp.setenv("HOSTILE_SCIM_TOKEN", SCIM_TOKEN)
        mp.setenv("HOSTILE_API_KEY", API_KEY)
        config = _config(tmp_path_factory.mktemp("hostile"), issuer.url)
        with daemon_in_thread(config, watch_interval=0.5, name="hostile-daemon") as (daemon, _):
            base = f"http://127.0.0.1:{daemon.port}"
            headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
            with httpx.Client(base_url=f"{base}/scim/v2", headers=headers) as http:
                user = http.post(
                    "/Users",
                    json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "target"},
                ).json()["id"]
                group = http.post(
                    "/Groups",
                    json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "t"},
                ).json()["id"]
            yield Served(base, user, group)


def _check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            pytest.fail(f"{what}: {response.status_code} without a JSON body: {response.text[:200]!r}")
        assert isinstance(body, dict), what


@contextlib.contextmanager
def _no_traceback(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No structlog event and no standard-library record in the block carries an exception."""
    caplog.clear()
    with caplog.at_level(logging.INFO), capture_logs() as events:
        yield
    for event in events:
        assert "exc_info" not in event, event
        assert "exception" not in event, event
        assert "Traceback" not in json.dumps(event, default=str), event
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage(), record.getMessage()


def _send(http: httpx.Client, served: Served, body: bytes, query: str = "") -> None:
    for method, path, bearer, media in served.endpoints():
        headers = {"Content-Type": media}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        url = path + (f"?{query}" if query else "")
        response = http.request(method, url, content=body if method != "GET" else None, headers=headers)
        _check(response, f"{method} {url} with {body[:60]!r}")


def test_the_corpus_through_every_endpoint(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    with _no_traceback(caplog), httpx.Client(base_url=served.base, timeout=60) as http:
        for body in CORPUS:
            _send(http, served, body)
        for query in QUERIES:
            _send(http, served, b"{}", query)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
scim_keys = st.sampled_from(
    [
        "schemas",
        "userName",
        "emails",
        "active",
        "externalId",
        "name",
        "members",
        "displayName",
        "Operations",
        "op",
        "path",
        "value",
        "filter",
        "id",
        "meta",
        "kind",
        "metadata",
        "spec",
        "id_token",
    ]
)
shaped = st.dictionaries(scim_keys, json_values, max_size=6)


# 25 examples through 23 endpoints: about 30 s here (make test must stay under 15 minutes); more
# belong in `make bench`, not `make test`.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(shaped.map(lambda d: json.dumps(d).encode()), st.binary(max_size=200)),
    segment=st.text(max_size=30),
)
def test_generated_bodies_and_paths(
    served: Served, caplog: pytest.LogCaptureFixture, body: bytes, segment: str
) -> None:
    with _no_traceback(caplog), httpx.Client(base_url=served.base, timeout=60) as http:
        _send(http, served, body)
        quoted = urllib.parse.quote(segment, safe="") or "x"
        for method, path in (
            ("GET", f"/scim/v2/Users/{quoted}"),
            ("DELETE", f"/api/meshobjects/meshUser/{quoted}"),
        ):
            headers = {"Authorization": f"Bearer {SCIM_TOKEN if path.startswith('/scim') else API_KEY}"}
            _check(http.request(method, path, headers=headers), f"{method} {path}")


def test_a_path_no_route_matches_is_a_json_404(served: Served) -> None:
    """An encoded "/" splits a segment in two, so no route matches: JSON, as every other answer.
    (hypothesis found GET /scim/v2/Users/%2F%0A0 answered with Starlette's plain-text 404.)"""
    with httpx.Client(base_url=served.base) as http:
        for method, path in (("GET", "/scim/v2/Users/%2F%0A0"), ("GET", "/nowhere"), ("DELETE", "/healthz")):
            r = http.request(method, path, headers={"Authorization": f"Bearer {SCIM_TOKEN}"})
            assert r.status_code in (404, 405), (method, path)
            assert r.headers["content-type"].startswith("application/json"), (method, path)
            assert "error" in r.json()
