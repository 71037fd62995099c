"""A real Keystone (from PyPI, on SQLite) served by gunicorn on 127.0.0.1, for the OpenStack tests.

Setting Keystone up (db_sync, fernet and credential keys, bootstrap) takes about 20 s, so it is done
once per machine into a cache directory outside the repository (``$REPLICATOR_TEST_CACHE`` or
``~/.cache/replicator-tests``, ``keystone-<version>-<recipe hash>``); each session copies that
directory, points the stored endpoint URLs at a free port and starts gunicorn (a few seconds).
``-w 1 -k sync``: Keystone on SQLite says "database is locked" with threads.
"""

from __future__ import annotations

import getpass
import grp
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.local_server import free_port

ADMIN_PASSWORD = "replicator-test-admin"  # a throwaway local server's bootstrap password
REGION = "RegionOne"
_PREPARE_PORT = 35357

_CONF = """\
[DEFAULT]
use_stderr = false
log_file = {dir}/keystone.log

[database]
connection = sqlite:///{dir}/keystone.db

[fernet_tokens]
key_repository = {dir}/fernet-keys

[fernet_receipts]
key_repository = {dir}/fernet-keys

[credential]
key_repository = {dir}/credential-keys

[cache]
enabled = true
backend = dogpile.cache.memory

[token]
expiration = 86400

[identity]
# bcrypt's cheapest cost: every token request verifies the admin password (test server only)
password_hash_rounds = 4
"""

_APP = '''\
"""gunicorn entry point: Keystone parses the process arguments, so hide gunicorn's."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
os.environ["OS_KEYSTONE_CONFIG_FILES"] = os.path.join(_here, "keystone.conf")
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from keystone.server.wsgi import initialize_public_application

    application = initialize_public_application()
finally:
    sys.argv = _argv
'''


def _version() -> str:
    from importlib.metadata import version

    return version("keystone")


def cache_root() -> Path:
    base = os.environ.get("REPLICATOR_TEST_CACHE") or os.path.join(Path.home(), ".cache", "replicator-tests")
    return Path(base)


def _write_config(directory: Path) -> None:
    (directory / "keystone.conf").write_text(_CONF.format(dir=directory))
    (directory / "keystone_app.py").write_text(_APP)


def _manage(directory: Path, *args: str) -> None:
    manage = Path(sys.executable).with_name("keystone-manage")
    cmd = [str(manage), "--config-file", str(directory / "keystone.conf"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"keystone-manage {args[0]} failed:\n{done.stdout}\n{done.stderr}")


def prepared() -> Path:
    """The machine's prepared Keystone directory (made on first use; atomically renamed into place)."""
    digest = hashlib.sha256((_CONF + _APP).encode()).hexdigest()[:8]  # a new recipe, a new directory
    target = cache_root() / f"keystone-{_version()}-{digest}"
    if (target / "ready").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="keystone-prepare-", dir=target.parent))
    _write_config(work)
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    url = f"http://127.0.0.1:{_PREPARE_PORT}/v3/"
    _manage(work, "db_sync")
    _manage(work, "fernet_setup", "--keystone-user", user, "--keystone-group", group)
    _manage(work, "credential_setup", "--keystone-user", user, "--keystone-group", group)
    _manage(
        work,
        "bootstrap",
        "--bootstrap-password",
        ADMIN_PASSWORD,
        "--bootstrap-region-id",
        REGION,
        "--bootstrap-admin-url",
        url,
        "--bootstrap-internal-url",
        url,
        "--bootstrap-public-url",
        url,
    )
    (work / "ready").write_text("ok\n")
    try:
        work.rename(target)
    except OSError:  # another session finished first
        shutil.rmtree(work, ignore_errors=True)
    return target


class Keystone:
    """A running Keystone: ``with Keystone() as ks: ks.url``; ``ks.admin()`` is a plain openstacksdk
    connection as the bootstrap admin (project ``admin``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v3"
        self._tmp = Path(tempfile.mkdtemp(prefix="keystone-"))
        self.dir = self._tmp / "keystone"
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Any = None

    def __enter__(self) -> Keystone:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        shutil.copytree(prepared(), self.dir)
        _write_config(self.dir)
        db = sqlite3.connect(self.dir / "keystone.db")
        with db:
            db.execute(
                "UPDATE endpoint SET url = replace(url, ?, ?)",
                (f":{_PREPARE_PORT}/", f":{self.port}/"),
            )
        db.close()
        log = (self.dir / "gunicorn.log").open("wb")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                "1",
                "-k",
                "sync",
                "--no-control-socket",
                "--timeout",
                "120",
                "-b",
                f"127.0.0.1:{self.port}",
                "--chdir",
                str(self.dir),
                "keystone_app:application",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + (self.dir / "gunicorn.log").read_text()[-4000:])
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("Keystone did not become ready in 90 s")

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def auth(self) -> dict[str, str]:
        return {
            "auth_url": self.url,
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "project_name": "admin",
            "user_domain_id": "default",
            "project_domain_id": "default",
        }

    def admin(self) -> Any:
        """A plain openstacksdk connection as admin (cached)."""
        if self._conn is None:
            import openstack

            self._conn = openstack.connect(auth=self.auth(), region_name=REGION, identity_interface="public")
        return self._conn


_SHARED: Keystone | None = None
PASSWORD_ENV = "KEYSTONE_TEST_ADMIN_PASSWORD"  # not REPLICATOR_*: those override the config


def shared() -> Keystone:
    """One Keystone per test process (integration and e2e share it); stopped at exit."""
    global _SHARED
    if _SHARED is None:
        import atexit

        server = Keystone()
        server.__enter__()
        atexit.register(server.stop)
        _SHARED = server
    return _SHARED


class World:
    """What one test owns in the shared Keystone: its own domain (groups and users live there),
    projects, users and roles with unique names, and an identity provider when asked for."""

    def __init__(self, ks: Keystone, tag: str) -> None:
        self.ks = ks
        self.conn = ks.admin()
        self.tag = tag
        self.domain = self.conn.identity.create_domain(name=f"d-{tag}")
        self.created_roles: list[Any] = []

    def driver_options(self, **extra: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "authUrl": self.ks.url,
            "groupDomain": self.domain.name,
            "userDomain": self.domain.name,
            "credentials": {
                "username": "admin",
                "password": {"env": PASSWORD_ENV},
                "userDomain": "Default",
                "projectName": "admin",
                "projectDomain": "Default",
            },
        }
        options.update(extra)
        return options

    def project(self, name: str) -> str:
        return str(self.conn.identity.create_project(name=f"{name}-{self.tag}", domain_id=self.domain.id).id)

    def user(self, name: str, domain_id: str | None = None) -> str:
        return str(self.conn.identity.create_user(name=name, domain_id=domain_id or self.domain.id).id)

    def role(self, name: str) -> str:
        role = self.conn.identity.create_role(name=name)
        self.created_roles.append(role)
        return str(role.id)

    def role_id(self, name: str) -> str:
        return str(self.conn.identity.find_role(name, ignore_missing=False).id)

    def idp(self, user_domain: str) -> str:
        """An identity provider with an ``openid`` protocol; returns its id."""
        idp_id = f"idp-{self.tag}"
        mapping_id = f"map-{self.tag}"
        self.conn.identity.create_identity_provider(id=idp_id, is_enabled=True)
        self.conn.identity.create_mapping(
            id=mapping_id,
            rules=[
                {
                    "local": [{"user": {"name": "{0}", "domain": {"name": user_domain}}}],
                    "remote": [{"type": "OIDC-sub"}],
                }
            ],
        )
        self.conn.identity.create_federation_protocol(idp_id, id="openid", mapping_id=mapping_id)
        return idp_id

    # --- reading back, with plain openstacksdk ---

    def groups(self) -> dict[str, Any]:
        return {g.name: g for g in self.conn.identity.groups(domain_id=self.domain.id)}

    def members(self, group_id: str) -> list[str]:
        return sorted(u.name for u in self.conn.identity.group_users(group_id))

    def assignments(self, project_id: str, group_id: str) -> list[str]:
        rows = self.conn.identity.role_assignments(
            group_id=group_id, scope_project_id=project_id, include_names=True
        )
        return sorted(r.role["name"] for r in rows)

    def federated_users(self, idp_id: str, unique_id: str) -> list[dict[str, Any]]:
        resp = self.conn.identity.get("/users", params={"idp_id": idp_id, "unique_id": unique_id})
        resp.raise_for_status()
        users: list[dict[str, Any]] = resp.json()["users"]
        return users

    def cleanup(self) -> None:
        for role in self.created_roles:
            self.conn.identity.delete_role(role, ignore_missing=True)
