"""OIDC login ingestion against a real local issuer (tests/support/oidc_issuer.py) over HTTP, and
the real daemon app served by uvicorn. The daemon runs without workers: its queue shows which
tenants a login re-queues, and nothing talks to a platform."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from replicator import logs
from replicator.core.config import OidcProvider
from replicator.inputs.loader import InputError, load
from replicator.service.daemon import Daemon
from replicator.sources.oidc import ProviderUnavailable, TokenRejected, Verifier
from state import ObjectWrite, Store
from tests.support.oidc_issuer import AUDIENCE, OidcIssuer, hand_built

PLATFORM = "aws.eu-central-1"
LEDGER = f"finance/ledger/{PLATFORM}"
SUB = "u-1001"


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as i:
        yield i


def write_config(root: Path, issuer_url: str, provider: dict[str, Any] | None = None, **top: Any) -> Path:
    config: dict[str, Any] = {
        "state": "sqlite:///state.db",
        "inventory": ["inventory"],
        "storedObjects": True,
        "identity": {
            "oidc": [
                {
                    "name": "corp",
                    "issuer": issuer_url,
                    "audience": [AUDIENCE],
                    "claims": {"euid": "email"},
                    **(provider or {}),
                }
            ]
        },
        "platforms": [
            {
                "identifier": PLATFORM,
                "type": "aws",
                "euidPattern": "%s",
                "aws": {
                    "region": "eu-central-1",
                    "identityStoreId": "d-1234567890",
                    "instanceArn": "arn:aws:sso:::instance/ssoins-1234567890abcdef",
                    "endpointUrl": "http://127.0.0.1:9",
                },
            }
        ],
        "landingZones": [
            {
                "identifier": "aws-default",
                "platform": PLATFORM,
                "roleMappings": {
                    "user": {
                        "platformGroupAlias": "user",
                        "platformRoles": ["arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-1"],
                    }
                },
            }
        ],
        **top,
    }
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def inventory(*bound: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "meshUser",
            "metadata": {"name": "bob"},
            "spec": {"username": "bob", "email": "bob@example.com", "euid": "bob@example.com"},
        },
        {"apiVersion": "v1", "kind": "meshWorkspace", "metadata": {"name": "finance"}},
        {
            "apiVersion": "v1",
            "kind": "meshProject",
            "metadata": {"name": "ledger", "ownedByWorkspace": "finance"},
        },
        {
            "apiVersion": "v1",
            "kind": "meshTenant",
            "metadata": {
                "ownedByWorkspace": "finance",
                "ownedByProject": "ledger",
                "platformIdentifier": PLATFORM,
            },
            "spec": {"localId": "111111111111", "landingZoneIdentifier": "aws-default"},
        },
        {
            "apiVersion": "v1",
            "kind": "meshProjectBinding",
            "metadata": {"ownedByWorkspace": "finance", "ownedByProject": "ledger"},
            "spec": {"role": "user", "subjects": [{"user": u} for u in ("bob", *bound)]},
        },
    ]
    return docs


def write_inventory(root: Path, *bound: str) -> None:
    (root / "inventory").mkdir(exist_ok=True)
    (root / "inventory" / "org.yaml").write_text(yaml.safe_dump_all(inventory(*bound), sort_keys=False))


class Env:
    def __init__(self, daemon: Daemon, http: httpx.AsyncClient, root: Path) -> None:
        self.daemon, self.http, self.root = daemon, http, root

    async def login(self, token: str, provider: str = "corp") -> httpx.Response:
        return await self.http.post(f"/v1/login/{provider}", json={"idToken": token})

    @property
    def store(self) -> Store:
        assert self.daemon.store is not None
        return self.daemon.store

    async def drain(self) -> list[str]:
        await self.daemon.settled()  # a login returns before the reload it asked for
        keys = []
        while self.daemon.queue.depth():
            item = await self.daemon.queue.get()
            self.daemon.queue.done(item.key)  # nothing runs it here: free it for the next add
            keys.append(item.key)
        return keys


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(tmp_path: Path, issuer: OidcIssuer) -> AsyncIterator[MakeEnv]:
    started: list[tuple[Daemon, httpx.AsyncClient]] = []

    async def make(provider: dict[str, Any] | None = None) -> Env:
        path = write_config(tmp_path, issuer.url, provider)
        write_inventory(tmp_path)
        d = Daemon(config_path=path, listen=("127.0.0.1", 0), workers=0, watch_interval=0.1, grace=1)
        await d.start()
        assert d.validated is not None, d.config_error
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}", timeout=10)
        started.append((d, http))
        env = Env(d, http, tmp_path)
        await env.drain()
        return env

    yield make
    for d, http in started:
        await http.aclose()
        await d.stop()


@pytest.fixture
async def env(make_env: MakeEnv) -> Env:
    return await make_env()


# --- the happy path -----------------------------------------------------------------------------


async def test_a_valid_token_creates_the_user(
    env: Env, issuer: OidcIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("json", "info")  # an earlier test may have set a quieter level
    token = issuer.mint()
    r = await env.login(token)
    assert r.status_code == 201, r.text
    assert r.json() == {"user": SUB, "euid": "alice@example.com", "created": True, "changed": True}
    stored = env.store.get_object("meshUser", SUB)
    assert stored is not None
    assert stored.source == "oidc:corp"
    assert stored.document == {
        "apiVersion": "v1",
        "kind": "meshUser",
        "metadata": {"name": SUB},
        "spec": {
            "username": "alice",
            "email": "alice@example.com",
            "givenName": "Alice",
            "familyName": "Liddell",
            "euid": "alice@example.com",
        },
    }
    await env.daemon.settled()
    assert env.daemon.validated is not None
    assert env.daemon.validated.inventory.users[SUB].spec.euid == "alice@example.com"
    again = await env.login(issuer.mint())
    assert again.status_code == 200
    assert again.json() == {"user": SUB, "euid": "alice@example.com", "created": False, "changed": False}
    out, err = capsys.readouterr()
    assert "oidc login" in out + err, "the login is logged"
    assert token not in out + err, "the token is never logged"
    assert token.split(".")[2] not in out + err


async def test_the_form_field_id_token_is_accepted(env: Env, issuer: OidcIssuer) -> None:
    r = await env.http.post("/v1/login/corp", data={"id_token": issuer.mint()})
    assert r.status_code == 201, r.text
    assert r.json()["user"] == SUB


async def test_a_changed_euid_is_updated_and_requeues_the_users_tenants(env: Env, issuer: OidcIssuer) -> None:
    assert (await env.login(issuer.mint())).status_code == 201
    write_inventory(env.root, SUB)  # now bind the stored user on finance/ledger
    assert await env.daemon.reload()
    await env.drain()

    r = await env.login(issuer.mint(email="alice.liddell@example.com"))
    assert r.status_code == 200, r.text
    assert r.json() == {"user": SUB, "euid": "alice.liddell@example.com", "created": False, "changed": True}
    stored = env.store.get_object("meshUser", SUB)
    assert stored is not None
    assert stored.document["spec"]["euid"] == "alice.liddell@example.com"
    assert await env.drain() == [LEDGER]

    unchanged = await env.login(issuer.mint(email="alice.liddell@example.com"))
    assert unchanged.json()["changed"] is False
    assert await env.drain() == []


# --- refused tokens ----------------------------------------------------------------------------


def bad_claims() -> list[tuple[dict[str, Any], str]]:
    now = int(time.time())
    return [
        ({"exp": now - 3600, "iat": now - 7200, "nbf": None}, "expired"),
        ({"nbf": now + 3600}, "not yet valid"),
        ({"iat": now + 3600}, "not yet valid"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["someone-else", "another"]}, "wrong audience"),
        ({"aud": [AUDIENCE, "another"], "azp": "another"}, "wrong audience"),
        ({"iss": "https://evil.example.com"}, "wrong issuer"),
        ({"exp": None}, "missing exp"),
        ({"iat": None}, "missing iat"),
        ({"exp": "tomorrow"}, "malformed exp"),
    ]


async def test_bad_claims_are_refused(
    env: Env, issuer: OidcIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("json", "info")  # an earlier test may have set a quieter level
    tokens = []
    for overrides, reason in bad_claims():
        token = issuer.mint(**overrides)
        tokens.append(token)
        r = await env.login(token)
        assert (r.status_code, r.json()) == (401, {"error": reason}), overrides
        assert token not in r.text
    assert env.store.list_objects("meshUser") == []
    out, err = capsys.readouterr()
    assert "oidc login refused" in out + err
    assert not [t for t in tokens if t.split(".")[2] in out + err], "a refused token was logged"


async def test_an_audience_list_with_ours_and_our_azp_is_accepted(env: Env, issuer: OidcIssuer) -> None:
    r = await env.login(issuer.mint(aud=[AUDIENCE, "another"], azp=AUDIENCE))
    assert r.status_code == 201, r.text


async def test_leeway_accepts_a_token_just_expired(env: Env, issuer: OidcIssuer) -> None:
    now = int(time.time())
    r = await env.login(issuer.mint(exp=now - 20, iat=now - 400, nbf=None))
    assert r.status_code == 201, r.text  # default leeway 60 s


async def test_a_token_signed_by_a_key_not_published_is_refused(env: Env, issuer: OidcIssuer) -> None:
    stranger = OidcIssuer.new_key(kid=issuer.signing_key.kid)  # same kid, other key
    r = await env.login(issuer.mint(key=stranger))
    assert (r.status_code, r.json()) == (401, {"error": "bad signature"})
    other = OidcIssuer.new_key(kid="not-published")
    r = await env.login(issuer.mint(key=other))
    assert (r.status_code, r.json()) == (401, {"error": "unknown key"})


async def test_alg_none_is_refused(env: Env, issuer: OidcIssuer) -> None:
    token = hand_built({"alg": "none", "typ": "JWT"}, issuer.claims())
    r = await env.login(token)
    assert (r.status_code, r.json()) == (401, {"error": "algorithm not allowed"})
    assert env.store.get_object("meshUser", SUB) is None


async def test_hs256_signed_with_the_public_key_is_refused(env: Env, issuer: OidcIssuer) -> None:
    r = await env.login(issuer.hs256_with_public_key())
    assert (r.status_code, r.json()) == (401, {"error": "algorithm not allowed"})
    assert env.store.get_object("meshUser", SUB) is None


async def test_an_algorithm_not_configured_is_refused(env: Env, issuer: OidcIssuer) -> None:
    ec = issuer.rotate("EC")  # published, but the provider allows RS256 only
    r = await env.login(issuer.mint(key=ec))
    assert (r.status_code, r.json()) == (401, {"error": "algorithm not allowed"})


async def test_garbage_is_refused_with_a_located_error(env: Env) -> None:
    for token in ("not-a-token", "a.b.c", "x" * 20_000):
        r = await env.login(token)
        assert (r.status_code, r.json()) == (401, {"error": "malformed token"})
    r = await env.http.post("/v1/login/corp", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["where"] == "body"
    r = await env.http.post("/v1/login/corp", json={"token": "x"})
    assert r.status_code == 400
    assert r.json()["where"] == "body.idToken"
    r = await env.http.post("/v1/login/corp", data={"other": "x"})
    assert r.status_code == 400
    assert r.json()["where"] == "form field id_token"


async def test_unknown_provider_is_404(env: Env, issuer: OidcIssuer) -> None:
    r = await env.login(issuer.mint(), provider="nope")
    assert r.status_code == 404
    assert "nope" in r.json()["error"]


# --- keys: rotation, refetch limits, no kid ----------------------------------------------------


async def test_an_unknown_kid_refetches_the_keys_once_and_then_succeeds(
    make_env: MakeEnv, issuer: OidcIssuer
) -> None:
    env = await make_env({"jwksMinRefresh": "0s"})
    assert (await env.login(issuer.mint())).status_code == 201
    assert issuer.jwks_fetches == 1
    issuer.rotate(keep_old=False)
    r = await env.login(issuer.mint(email="rotated@example.com"))
    assert r.status_code == 200, r.text
    assert r.json()["euid"] == "rotated@example.com"
    assert issuer.jwks_fetches == 2


async def test_garbage_kids_do_not_refetch_within_min_refresh(env: Env, issuer: OidcIssuer) -> None:
    assert (await env.login(issuer.mint())).status_code == 201
    assert issuer.jwks_fetches == 1
    for i in range(5):
        r = await env.login(issuer.mint(kid=f"garbage-{i}"))
        assert (r.status_code, r.json()) == (401, {"error": "unknown key"})
    assert issuer.jwks_fetches == 1, "an unknown kid within jwksMinRefresh (30 s) does not refetch"
    assert issuer.discovery_fetches == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider(issuer: OidcIssuer, **extra: Any) -> OidcProvider:
    return OidcProvider.model_validate(
        {"name": "corp", "issuer": issuer.url, "audience": [AUDIENCE], "jwksMinRefresh": "30s", **extra}
    )


async def test_the_verifier_refetches_at_most_once_per_min_refresh_and_after_the_ttl(
    issuer: OidcIssuer,
) -> None:
    clock = Clock()
    v = Verifier(provider(issuer, jwksCacheTtl="10m"), monotonic=clock)
    assert (await v.verify(issuer.mint()))["sub"] == SUB
    assert v.jwks_fetches == 1
    for i in range(10):
        with pytest.raises(TokenRejected, match="unknown key"):
            await v.verify(issuer.mint(kid=f"garbage-{i}"))
    assert v.jwks_fetches == 1
    clock.now += 31  # min refresh over: one more fetch, then quiet again
    for i in range(10):
        with pytest.raises(TokenRejected, match="unknown key"):
            await v.verify(issuer.mint(kid=f"more-garbage-{i}"))
    assert v.jwks_fetches == 2 == issuer.jwks_fetches
    clock.now += 600  # cache TTL over: the next verification refetches
    await v.verify(issuer.mint())
    assert v.jwks_fetches == 3


async def test_an_unreachable_provider_is_not_asked_more_than_once_per_min_refresh(
    issuer: OidcIssuer,
) -> None:
    clock = Clock()
    issuer.down = True
    v = Verifier(provider(issuer, jwksCacheTtl="10m"), monotonic=clock)
    for _ in range(5):
        with pytest.raises(ProviderUnavailable, match="HTTP 503"):
            await v.verify(issuer.mint())
    assert issuer.discovery_fetches == 1
    issuer.down = False
    clock.now += 31
    assert (await v.verify(issuer.mint()))["sub"] == SUB
    assert (issuer.discovery_fetches, issuer.jwks_fetches) == (2, 1)
    # The keys expire while the provider is down: the cached keys stay in use, one attempt only.
    issuer.down = True
    clock.now += 601
    for _ in range(5):
        assert (await v.verify(issuer.mint()))["sub"] == SUB
    assert issuer.jwks_fetches == 2


async def test_a_token_without_kid_needs_exactly_one_key_of_its_type(issuer: OidcIssuer) -> None:
    v = Verifier(provider(issuer, algorithms=["RS256", "ES256"]))
    assert (await v.verify(issuer.mint(kid=None)))["sub"] == SUB
    ec = issuer.rotate("EC")
    v = Verifier(provider(issuer, algorithms=["RS256", "ES256"]))
    assert (await v.verify(issuer.mint(key=ec, kid=None)))["sub"] == SUB  # one EC key, one RSA key
    assert (await v.verify(issuer.mint(key=issuer.keys[0], kid=None)))["sub"] == SUB
    issuer.rotate("RSA")
    v = Verifier(provider(issuer, algorithms=["RS256", "ES256"]))
    with pytest.raises(TokenRejected, match="unknown key"):
        await v.verify(issuer.mint(kid=None))  # two RSA keys: which one?


async def test_an_es256_token_verifies_with_an_ec_key(issuer: OidcIssuer) -> None:
    ec = issuer.rotate("EC")
    v = Verifier(provider(issuer, algorithms=["ES256"]))
    assert (await v.verify(issuer.mint(key=ec)))["email"] == "alice@example.com"
    # An RS256 header naming the EC key's kid is not verified with it.
    v = Verifier(provider(issuer, algorithms=["ES256", "RS256"]))
    with pytest.raises(TokenRejected, match="algorithm not allowed"):
        await v.verify(issuer.mint(key=issuer.keys[0], kid=ec.kid))


async def test_a_discovery_document_with_another_issuer_is_unavailable(issuer: OidcIssuer) -> None:
    p = OidcProvider.model_validate({"name": "corp", "issuer": issuer.url + "/", "audience": [AUDIENCE]})
    with pytest.raises(ProviderUnavailable, match="is not the configured"):
        await Verifier(p).verify(issuer.mint())


async def test_an_unreachable_provider_is_503(make_env: MakeEnv, issuer: OidcIssuer, tmp_path: Path) -> None:
    env = await make_env()
    with OidcIssuer() as gone:
        url = gone.url
    write_config(tmp_path, url)
    assert await env.daemon.reload()
    r = await env.login(issuer.mint(iss=url))
    assert r.status_code == 503
    assert "unavailable" in r.json()["error"]


# --- who owns the user -------------------------------------------------------------------------


async def test_a_missing_claim_is_422(env: Env, issuer: OidcIssuer) -> None:
    r = await env.login(issuer.mint(email=None))  # claims.euid is email
    assert r.status_code == 422
    assert r.json()["where"] == "token claim email"
    r = await env.login(issuer.mint(sub=None))
    assert r.status_code == 422
    assert r.json()["where"] == "token claim sub"
    r = await env.login(issuer.mint(sub="has space"))
    assert r.status_code == 422
    assert r.json()["problems"][0]["where"] == "token claim sub"
    assert env.store.list_objects("meshUser") == []


async def test_an_euid_taken_by_another_user_is_422_with_located_problems(
    env: Env, issuer: OidcIssuer
) -> None:
    r = await env.login(issuer.mint(email="bob@example.com"))
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert problems == [
        {
            "where": "oidc login (corp)",
            "object": f"meshUser {SUB}",
            "field": "spec.euid",
            "message": "euid 'bob@example.com' is also the euid of meshUser bob: euids must be unique",
        }
    ]
    assert env.store.get_object("meshUser", SUB) is None


async def test_a_user_defined_in_a_file_is_409_and_nothing_is_written(env: Env, issuer: OidcIssuer) -> None:
    revision = env.store.objects_revision()
    r = await env.login(issuer.mint(sub="bob", email="bob2@example.com"))
    assert r.status_code == 409
    assert "inventory file" in r.json()["error"]
    assert env.store.get_object("meshUser", "bob") is None
    assert env.store.objects_revision() == revision


async def test_a_user_owned_by_another_source_is_409_and_nothing_is_written(
    env: Env, issuer: OidcIssuer
) -> None:
    doc = {"apiVersion": "v1", "kind": "meshUser", "metadata": {"name": "carol"}, "spec": {"euid": "carol@x"}}
    env.store.write_objects("api", puts=[ObjectWrite("meshUser", "carol", doc)])
    revision = env.store.objects_revision()
    r = await env.login(issuer.mint(sub="carol", email="carol@example.com"))
    assert r.status_code == 409
    assert r.json()["owner"] == "api"
    assert "'api'" in r.json()["error"]
    stored = env.store.get_object("meshUser", "carol")
    assert stored is not None
    assert stored.source == "api"
    assert stored.document == doc
    assert env.store.objects_revision() == revision


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_extra", "top", "expected"),
    [
        ({"algorithms": ["RS256", "HS256"]}, {}, "HS256"),
        ({"algorithms": ["none"]}, {}, "none"),
        ({}, {"storedObjects": False}, "storedObjects: true is required"),
    ],
)
def test_bad_oidc_config_is_a_located_problem(
    tmp_path: Path, provider_extra: dict[str, Any], top: dict[str, Any], expected: str
) -> None:
    path = write_config(tmp_path, "https://login.example.com", provider_extra, **top)
    write_inventory(tmp_path)
    with pytest.raises(InputError) as e:
        load(path)
    assert any(expected in p.message and p.file == str(path) and p.line for p in e.value.problems), e.value


def test_duplicate_provider_names_are_a_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, "https://login.example.com")
    doc = yaml.safe_load(path.read_text())
    doc["identity"]["oidc"].append(dict(doc["identity"]["oidc"][0]))
    path.write_text(yaml.safe_dump(doc))
    write_inventory(tmp_path)
    with pytest.raises(InputError) as e:
        load(path)
    assert any("corp" in p.message and "more than once" in p.message for p in e.value.problems), e.value


async def test_a_huge_login_body_is_refused_before_it_is_read_whole(env: Env) -> None:
    """The login is unauthenticated: a body over the limit is 413, declared or streamed (chunked,
    no Content-Length); that the stream is not read past the limit is tests/unit/test_bodies.py."""

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(200):  # 12.5 MiB
            yield b"[" * 65_536

    r = await env.http.post("/v1/login/corp", content=endless(), headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["where"]) == (413, "body")


async def test_a_deeply_nested_login_body_is_400_without_a_traceback(env: Env) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        for depth in (40, 5_000):
            body = b"[" * depth + b"]" * depth
            r = await env.http.post(
                "/v1/login/corp", content=body, headers={"content-type": "application/json"}
            )
            assert (r.status_code, r.json()["where"]) == (400, "body"), depth
    assert not [e for e in logs if "exc_info" in e or e.get("log_level") == "error"], logs
