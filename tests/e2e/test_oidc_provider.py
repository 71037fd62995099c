"""End to end with a real OpenID Connect provider: npm ``oidc-provider`` 9 (tests/support/oidc_node)
signs ID tokens with our RSA key; the test runs the authorization-code flow with PKCE over HTTP
(through the provider's login and consent pages), then posts the ID token to the daemon's
``/v1/login/corp``. The npm package is installed with ``npm ci`` into a cache outside the repo
(``~/.cache/replicator-tests/oidc-provider/<hash of package.json and package-lock.json>``).
Skipped when node/npm are missing or the install fails, except under CI=true (then it fails)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest
from joserfc import jwk

from replicator.service.daemon import Daemon
from tests.integration.test_oidc_login import write_config, write_inventory
from tests.support.local_server import free_port

NODE_DIR = Path(__file__).resolve().parents[1] / "support" / "oidc_node"
CLIENT_ID = "replicator-portal"
REDIRECT_URI = "http://127.0.0.1/callback"


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: the real OIDC provider is required: {reason}")
    pytest.skip(reason)


def install() -> Path:
    """The cache folder with node_modules installed for this package.json + lock."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed for the oidc-provider end-to-end test")
    lock = (NODE_DIR / "package.json").read_bytes() + (NODE_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()[:16]
    base = Path(os.environ.get("REPLICATOR_TEST_CACHE", Path.home() / ".cache" / "replicator-tests"))
    target = base / "oidc-provider" / digest
    if not (target / "node_modules" / "oidc-provider" / "package.json").is_file():
        work = target.with_name(f"{digest}.tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_DIR / name, work / name)
        try:
            done = subprocess.run(
                [str(npm), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            unavailable("npm ci oidc-provider timed out")
        if done.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            unavailable(f"npm ci oidc-provider failed: {done.stderr.strip()[-500:]}")
        if target.exists():  # another run finished first
            shutil.rmtree(work, ignore_errors=True)
        else:
            work.rename(target)
    shutil.copy(NODE_DIR / "server.mjs", target / "server.mjs")
    return target


@pytest.fixture
def provider_url(tmp_path: Path) -> Iterator[str]:
    folder = install()
    key = jwk.generate_key("RSA", 2048, parameters={"kid": "node-rsa-1", "alg": "RS256", "use": "sig"})
    key_file = tmp_path / "provider-key.json"
    key_file.write_text(json.dumps(key.as_dict(private=True)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PORT": str(port),
        "JWK_FILE": str(key_file),
        "CLIENT_ID": CLIENT_ID,
        "REDIRECT_URI": REDIRECT_URI,
    }
    with (tmp_path / "oidc-provider.log").open("w") as log:
        proc = subprocess.Popen(
            ["node", "server.mjs"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    "oidc-provider exited: " + (tmp_path / "oidc-provider.log").read_text()[-2000:]
                )
            try:
                if httpx.get(f"{url}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("oidc-provider did not start within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def code_flow(issuer: str, login: str) -> str:
    """Authorization code + PKCE (S256) through the provider's login and consent pages; the ID token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    with httpx.Client(follow_redirects=False, timeout=10) as c:
        r = c.get(
            f"{issuer}/auth",
            params={
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": "openid email profile",
                "redirect_uri": REDIRECT_URI,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": state,
                "nonce": nonce,
            },
        )
        pages = []
        for _ in range(12):
            if r.status_code in (302, 303):
                location = urljoin(str(r.url), r.headers["location"])
                if location.startswith(REDIRECT_URI):
                    break
                r = c.get(location)
                continue
            assert r.status_code == 200, r.text[:500]
            form = re.search(r'<form[^>]*action="([^"]+)"', r.text)
            assert form is not None, r.text[:500]
            fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', r.text))
            pages.append(fields.get("prompt"))
            if 'name="login"' in r.text:
                fields.update(login=login, password="any")
            r = c.post(urljoin(str(r.url), html.unescape(form.group(1))), data=fields)
        else:
            raise AssertionError(f"no redirect back to the client after {pages}")
        assert pages == ["login", "consent"]
        query = parse_qs(urlparse(location).query)
        assert query["state"] == [state]
        assert query["iss"] == [issuer]
        token = c.post(
            f"{issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT_URI,
                "client_id": CLIENT_ID,
                "code_verifier": verifier,
            },
        )
        assert token.status_code == 200, token.text
        return str(token.json()["id_token"])


@pytest.fixture
async def daemon(tmp_path: Path, provider_url: str) -> AsyncIterator[Daemon]:
    path = write_config(tmp_path, provider_url, {"audience": [CLIENT_ID]})
    write_inventory(tmp_path)
    d = Daemon(config_path=path, listen=("127.0.0.1", 0), workers=0, watch_interval=0.1, grace=1)
    await d.start()
    try:
        assert d.validated is not None, d.config_error
        yield d
    finally:
        await d.stop()


async def test_a_real_provider_login_creates_the_user(daemon: Daemon, provider_url: str) -> None:
    id_token = code_flow(provider_url, "alice")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.port}", timeout=20) as http:
        r = await http.post("/v1/login/corp", json={"idToken": id_token})
        assert r.status_code == 201, r.text
        assert r.json() == {"user": "alice", "euid": "alice@example.com", "created": True, "changed": True}
        again = await http.post("/v1/login/corp", data={"id_token": code_flow(provider_url, "alice")})
        assert again.status_code == 200, again.text
        assert again.json()["changed"] is False
        tampered = id_token[:-4] + ("AAAA" if not id_token.endswith("AAAA") else "BBBB")
        refused = await http.post("/v1/login/corp", json={"idToken": tampered})
        assert (refused.status_code, refused.json()) == (401, {"error": "bad signature"})
    assert daemon.store is not None
    stored = daemon.store.get_object("meshUser", "alice")
    assert stored is not None
    assert stored.source == "oidc:corp"
    assert stored.document["spec"] == {
        "username": "alice",
        "email": "alice@example.com",
        "givenName": "Alice",
        "familyName": "Tester",
        "euid": "alice@example.com",
    }
