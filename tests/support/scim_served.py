"""A daemon serving the SCIM endpoints for the SCIM tests (the ``served`` fixture), and the
request bodies and checks they share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from scim2_client import BaseSyncSCIMClient
from scim2_models import EnterpriseUser, User

from replicator.service.daemon import Daemon
from state import Store
from tests.support.daemons import daemon_in_thread

TOKEN = "scim-bearer-for-tests-5d1c"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ScimUser = User[EnterpriseUser]


class HttpxSCIMClient(BaseSyncSCIMClient):
    """scim2-client over an ``httpx.Client`` (the client's own network engine needs ``httpx2``,
    which is not installed; this is the same few lines for httpx)."""

    def __init__(self, client: httpx.Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    def _stays_under_base_url(self, endpoint: str) -> bool:
        url = self.client.build_request("GET", endpoint).url
        base = self.client.base_url
        return url.scheme == base.scheme and url.netloc == base.netloc and url.path.startswith(base.path)

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, url, **kwargs)


@dataclass
class Served:
    daemon: Daemon
    root: Path
    base: str
    loop: asyncio.AbstractEventLoop

    def reload(self) -> None:
        """Reload the daemon's inventory now, on its own event loop."""

        asyncio.run_coroutine_threadsafe(self.daemon.reload(), self.loop).result(30)

    def settled(self) -> None:
        """Wait for the reloads the writes so far asked for (a write does not wait for its own)."""
        asyncio.run_coroutine_threadsafe(self.daemon.settled(), self.loop).result(30)

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def scim(self) -> HttpxSCIMClient:
        client = HttpxSCIMClient(self.http())
        client.discover()
        return client

    def store(self) -> Store:
        assert self.daemon.store is not None
        return self.daemon.store

    def inventory_users(self) -> dict[str, Any]:
        self.settled()
        assert self.daemon.validated is not None
        return dict(self.daemon.validated.inventory.users)


def write_config(
    root: Path, *, enabled: bool = True, euid_attribute: str = "userName", state: str = "sqlite:///state.db"
) -> Path:
    (root / "inventory").mkdir(exist_ok=True)
    (root / "inventory" / "org.yaml").write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "meshUser",
                    "metadata": {"name": "filey"},
                    "spec": {"euid": "taken@example.com", "email": "taken@example.com"},
                }
            ]
        )
    )
    config = {
        "state": state,
        "inventory": ["inventory"],
        "storedObjects": True,
        "identity": {
            "scim": {"enabled": enabled, "token": {"env": "SCIM_TEST_TOKEN"}, "euidAttribute": euid_attribute}
        },
    }
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Served]:
    """A daemon (in a thread with its own event loop) serving the SCIM endpoints on a free port of
    127.0.0.1; ``@pytest.mark.parametrize("served", [{...}], indirect=True)`` passes options of
    write_config."""
    monkeypatch.setenv("SCIM_TEST_TOKEN", TOKEN)
    opts: dict[str, Any] = getattr(request, "param", {})
    with serve(write_config(tmp_path, **opts)) as served:
        yield served


@contextlib.contextmanager
def serve(config_path: Path) -> Iterator[Served]:
    with daemon_in_thread(config_path, watch_interval=0.2, name="scim-daemon") as (daemon, loop):
        yield Served(daemon, config_path.parent, f"http://127.0.0.1:{daemon.port}/scim/v2", loop)


def error(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"], body
    assert response.headers["content-type"].startswith("application/scim+json")
    return response.status_code, body.get("scimType")


def entra_user(user_name: str, **extra: Any) -> dict[str, Any]:
    """A POST /Users body as Entra ID sends it."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": f"ext-{user_name}",
        "userName": user_name,
        "active": True,
        "displayName": user_name.split("@")[0].title(),
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "name": {"formatted": "X Y", "familyName": "Y", "givenName": "X"},
        "phoneNumbers": [{"type": "mobile", "value": "+49 170 0000000"}],
        ENTERPRISE: {"employeeNumber": "4711", "department": "Finance"},
        **extra,
    }
