"""A real OpenLDAP server (Debian's slapd) for the LDAP connector tests.

Each ``Slapd`` writes its own ``slapd.conf`` in a temporary folder (schemas core, cosine,
inetorgperson and nis; modules back_mdb and memberof; one mdb database), seeds it with
``slapadd``, and runs ``slapd -d 0`` in the foreground on 127.0.0.1 at a free port. The server has
a small size limit (``SIZE_LIMIT`` entries per search, no total limit for paged searches), so a
search that does not page past it fails for real. Limits do not bind the root DN: the connector
binds as ``READER_DN``, an ordinary entry allowed to read everything.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.local_server import free_port

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "slapd-root-secret-for-tests"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "ldap-reader-secret-for-tests"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
OUTSIDE = f"ou=contractors,{SUFFIX}"
SIZE_LIMIT = 5
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")


def slapd_binary() -> str | None:
    """The slapd executable, or None (also when slapadd or the modules are missing)."""
    for name in ("slapd", "slapadd"):
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
            return None
    if not (MODULE_DIR / "back_mdb.la").exists() and not (MODULE_DIR / "back_mdb.so").exists():
        return None
    return shutil.which("slapd") or "/usr/sbin/slapd"


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def ldif(entries: Iterable[tuple[str, Mapping[str, str | Sequence[str]]]]) -> str:
    out = []
    for dn, attrs in entries:
        lines = [f"dn: {dn}"]
        for key, value in attrs.items():
            for v in [value] if isinstance(value, str) else value:
                lines.append(f"{key}: {v}")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def person(uid: str, **extra: str | Sequence[str]) -> tuple[str, dict[str, str | Sequence[str]]]:
    """An inetOrgPerson under ou=people (cn, sn, givenName, mail derived from ``uid``)."""
    attrs: dict[str, str | Sequence[str]] = {
        "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
        "uid": uid,
        "cn": uid.capitalize(),
        "sn": f"{uid.capitalize()}son",
        "givenName": uid.capitalize(),
        "mail": f"{uid}@example.org",
    }
    attrs.update(extra)
    return f"uid={uid},{PEOPLE}", attrs


def group(cn: str, members: Sequence[str], *, unique: bool = False) -> tuple[str, dict[str, Any]]:
    """A groupOfNames (or groupOfUniqueNames) under ou=groups; ``members`` are DNs."""
    if unique:
        classes = ["top", "groupOfUniqueNames"]
        return f"cn={cn},{GROUPS}", {"objectClass": classes, "cn": cn, "uniqueMember": members}
    return f"cn={cn},{GROUPS}", {"objectClass": ["top", "groupOfNames"], "cn": cn, "member": members}


def base_entries() -> list[tuple[str, dict[str, Any]]]:
    return [
        (SUFFIX, {"objectClass": ["top", "dcObject", "organization"], "dc": "example", "o": "Example"}),
        (
            READER_DN,
            {
                "objectClass": ["top", "person", "simpleSecurityObject"],
                "cn": "reader",
                "sn": "reader",
                "userPassword": READER_PASSWORD,
            },
        ),
        (PEOPLE, {"objectClass": ["top", "organizationalUnit"], "ou": "people"}),
        (GROUPS, {"objectClass": ["top", "organizationalUnit"], "ou": "groups"}),
        (OUTSIDE, {"objectClass": ["top", "organizationalUnit"], "ou": "contractors"}),
    ]


class _ExitedError(RuntimeError):
    """slapd ended before it served."""


class Slapd:
    """One slapd instance. ``start()`` seeds (first time) and serves; ``stop()`` kills it (the data
    stays, ``start()`` again serves it on the same port: an outage)."""

    def __init__(
        self, root: Path, entries: Sequence[tuple[str, Mapping[str, Any]]] = (), *, tls: bool = False
    ) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.tls_port = free_port() if tls else None
        self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}" if tls else None
        self.ca_file = root / "ca.pem" if tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._seeded = False
        self._served = False
        self._entries = [*base_entries(), *entries]
        self.conf = root / "slapd.conf"
        (root / "db").mkdir(parents=True, exist_ok=True)
        tls_lines = []
        if tls:
            _write_certificates(root)
            tls_lines = [
                f"TLSCACertificateFile {root / 'ca.pem'}",
                f"TLSCertificateFile {root / 'server.pem'}",
                f"TLSCertificateKeyFile {root / 'server.key'}",
            ]
        self.conf.write_text(
            "\n".join(
                [
                    *(f"include {SCHEMA_DIR / s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")),
                    f"modulepath {MODULE_DIR}",
                    "moduleload back_mdb",
                    "moduleload memberof",
                    f"pidfile {root / 'slapd.pid'}",
                    f"argsfile {root / 'slapd.args'}",
                    *tls_lines,
                    f"sizelimit size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.pr={SIZE_LIMIT}"
                    " size.prtotal=unlimited",
                    "database mdb",
                    f'suffix "{SUFFIX}"',
                    f'rootdn "{ROOT_DN}"',
                    f"rootpw {ROOT_PASSWORD}",
                    f"directory {root / 'db'}",
                    "maxsize 104857600",
                    "index objectClass eq",
                    "overlay memberof",
                    "access to attrs=userPassword by self write by anonymous auth by * none",
                    "access to * by * read",
                    "",
                ]
            )
        )

    # --- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        # A first start whose slapd exits at once (seen once in a CI run, silently, with -d 0: most
        # likely its free port was taken between _free_port and slapd's bind) tries new ports; a
        # restart after stop() keeps its port, since clients were told that one.
        for attempt in range(3):
            try:
                return self._start(timeout)
            except _ExitedError:
                if self._served or attempt == 2:
                    raise
                self._new_ports()

    def _new_ports(self) -> None:
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        if self.tls_port is not None:
            self.tls_port = free_port()
            self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}"

    def _start(self, timeout: float) -> None:
        if not self._seeded:
            (self.root / "seed.ldif").write_text(ldif(self._entries))
            subprocess.run(
                [_sbin("slapadd"), "-q", "-f", str(self.conf), "-l", str(self.root / "seed.ldif")],
                check=True,
                capture_output=True,
            )
            self._seeded = True
        log = (self.root / "slapd.out").open("ab")
        urls = f"{self.url}/" + (f" {self.ldaps_url}/" if self.ldaps_url else "")
        self.proc = subprocess.Popen(
            [_sbin("slapd"), "-h", urls, "-f", str(self.conf), "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise _ExitedError(f"slapd exited with {self.proc.returncode}: see {self.root / 'slapd.out'}")
            try:
                conn = self.connection()
                conn.unbind()
                self._served = True
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- changing the directory ----------------------------------------------------------------

    def connection(self) -> Any:
        """An ldap3 connection bound as the root DN (no limits)."""
        import ldap3

        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=2)
        return ldap3.Connection(
            server, ROOT_DN, ROOT_PASSWORD, auto_bind=True, raise_exceptions=True, receive_timeout=5
        )

    def add(self, dn: str, attrs: Mapping[str, Any]) -> None:
        conn = self.connection()
        try:
            classes = attrs["objectClass"]
            rest = {k: v for k, v in attrs.items() if k != "objectClass"}
            conn.add(dn, classes, rest)
        finally:
            conn.unbind()

    def modify(self, dn: str, replace: Mapping[str, Any]) -> None:
        import ldap3

        conn = self.connection()
        try:
            changes = {
                k: [(ldap3.MODIFY_REPLACE, [v] if isinstance(v, str) else list(v))]
                for k, v in replace.items()
            }
            conn.modify(dn, changes)
        finally:
            conn.unbind()

    def delete(self, dn: str) -> None:
        conn = self.connection()
        try:
            conn.delete(dn)
        finally:
            conn.unbind()


def _write_certificates(root: Path) -> None:
    """A throw-away CA (``ca.pem``) and a server certificate for 127.0.0.1 signed by it."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "replicator test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
