"""Reading a directory: every user entry under ``userBase`` (and every group entry under
``groupBase`` when set), page by page with the RFC 2696 paged results control.

A read is complete or it is a ``SyncError``, never a partial answer: a connection, bind or TLS
error, a timeout, a size or admin limit, a failing page, a referral (never followed) or any other
non-success result fails the whole read. Attribute values are rendered as text and DNs compared in
a normalised form.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replicator.core.config import LdapConnector
from replicator.logs import get_logger

if TYPE_CHECKING:
    import ldap3

log = get_logger("replicator.sources.ldap")

PAGED_RESULTS = "1.2.840.113556.1.4.319"
_GUID_ATTRIBUTES = {"objectguid", "msds-consistencyguid", "guid", "nsuniqueid-binary"}
_REFERRAL = 10
"""The LDAP result code of a referral."""

PageHook = Callable[[str, int], None]
"""Called after every page read: (``users`` or ``groups``, pages so far). For tests (an outage
between two pages) and progress logs."""

LdapResult = Mapping[str, Any]
"""A result or a response item as ldap3 gives it: a dictionary of mixed values."""


class SyncError(Exception):
    """The directory could not be read completely: nothing is written."""


@dataclass
class Entry:
    dn: str
    attributes: Mapping[str, list[bytes]]

    def values(self, attribute: str) -> list[bytes]:
        wanted = attribute.casefold()
        for key, vals in self.attributes.items():
            # ``key`` may carry options (``cn;lang-en``); the plain attribute wins.
            if key.casefold() == wanted:
                return [v if isinstance(v, bytes) else str(v).encode() for v in vals]
        return []

    def first(self, attribute: str) -> str | None:
        vals = self.values(attribute)
        return render_value(vals[0], attribute) if vals else None


@dataclass
class Directory:
    users: list[Entry]
    groups: list[Entry] | None
    """None: groups are not synced (no groupBase)."""


@dataclass(frozen=True)
class _Search:
    """One paged subtree search."""

    what: str
    """``users`` or ``groups``."""
    base: str
    search_filter: str
    attributes: list[str]


def render_value(raw: bytes, attribute: str) -> str:
    """An attribute value as text: a 16-byte GUID (Active Directory ``objectGUID``) as its UUID,
    an ``objectSid`` as ``S-1-…``, UTF-8 text as is, other binary values as lowercase hex."""
    if attribute.casefold() in _GUID_ATTRIBUTES and len(raw) == 16:
        return str(uuid.UUID(bytes_le=raw))
    if attribute.casefold() == "objectsid" and len(raw) >= 8:
        return _sid(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() else raw.hex()


def _sid(raw: bytes) -> str:
    """A binary security identifier (revision, sub-authority count, 48-bit big-endian authority,
    32-bit little-endian sub-authorities) in its ``S-revision-authority-sub…`` spelling."""
    count = raw[1]
    authority = int.from_bytes(raw[2:8], "big")
    subs = [
        int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(count) if 12 + 4 * i <= len(raw)
    ]
    return "S-" + "-".join(str(x) for x in [raw[0], authority, *subs])


def normalize_dn(dn: str) -> str:
    """A DN in the form every spelling of the same DN shares, compared as RFC 4514 and the
    caseIgnoreMatch of its attributes say: spaces around ``,``, ``+`` and ``=`` are not part of the
    DN (directories return member DNs as they were written, ``uid=a, ou=people, dc=example``);
    escapes (``\\,`` and ``\\2C``) are the characters they stand for; values compare without case
    and with runs of inner spaces as one; the values of a multi-valued RDN (``cn=a+uid=b``) in any
    order. Parsed by ldap3's DN parser; a DN it cannot parse is only trimmed and case-folded."""
    from ldap3.utils.dn import escape_rdn, parse_dn

    try:
        parts = parse_dn(dn.strip(), strip=True)
    except Exception:
        return dn.strip().casefold()
    rdns: list[list[str]] = [[]]
    for attr, value, separator in parts:
        folded = " ".join(_unescape(value).casefold().split())
        rdns[-1].append(f"{attr.strip().casefold()}={escape_rdn(folded)}")
        if separator != "+":
            rdns.append([])
    return ",".join("+".join(sorted(rdn)) for rdn in rdns if rdn)


def _unescape(value: str) -> str:
    """An attribute value of a DN string with its RFC 4514 escapes (``\\c``, ``\\XX``) resolved."""
    if "\\" not in value:
        return value
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        elif ch == "\\" and i + 1 < len(value):
            out += value[i + 1].encode()
            i += 2
        else:
            out += ch.encode()
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def _describe(e: BaseException) -> str:
    """What went wrong, in words: the LDAP result description (and message) where there is one."""
    from ldap3.core.exceptions import LDAPInvalidCredentialsResult, LDAPOperationResult

    if isinstance(e, LDAPInvalidCredentialsResult):
        return "invalid credentials"
    if isinstance(e, LDAPOperationResult):
        msg = f"{e.description}" + (f": {e.message}" if e.message else "")
        return msg
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def read_directory(connector: LdapConnector, on_page: PageHook | None = None) -> Directory:
    """Every user (and group) entry, or SyncError. Never a partial answer."""
    from ldap3.core.exceptions import LDAPException

    password = _bind_password(connector)
    step = "TLS settings (caFile)"
    seconds = max(1, math.ceil(connector.timeout))  # ldap3 packs these as integers
    conn: ldap3.Connection | None = None
    try:
        tls = _tls(connector)  # a caFile that cannot be read is a failed sync, not a crash
        step = f"connecting to {connector.url}"
        conn = _connection(connector, password, tls, seconds)
        conn.open()
        if connector.start_tls:
            step = "StartTLS"
            conn.start_tls()
        step = f"bind as {connector.bind_dn}" if connector.bind_dn else "anonymous bind"
        if not conn.bind():
            raise SyncError(f"{step}: {conn.result.get('description')}")
        users_search = _Search(
            "users", connector.user_base, connector.user_filter, _user_attributes(connector)
        )
        step = f"user search under {connector.user_base}"
        users = _paged(conn, connector, users_search, on_page)
        groups = None
        if connector.group_base:
            groups_search = _Search(
                "groups", connector.group_base, connector.group_filter, _group_attributes(connector)
            )
            step = f"group search under {connector.group_base}"
            groups = _paged(conn, connector, groups_search, on_page)
        return Directory(users, groups)
    except SyncError:
        raise
    except (LDAPException, OSError, ssl.SSLError) as e:
        raise SyncError(f"{step}: {_describe(e)}") from None
    except Exception as e:  # whatever else breaks the read: still a failed sync, never a partial one
        log.debug("unexpected error reading the directory", exc_info=True)
        raise SyncError(f"{step}: unexpected {_describe(e)}") from None
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):  # the connection may already be gone (outage)
                conn.unbind()


def _bind_password(connector: LdapConnector) -> str | None:
    """The resolved ``bindPassword``, or SyncError when it cannot be resolved or ``bindDn`` needs
    one that is not set."""
    try:
        password = connector.bind_password.resolve() if connector.bind_password else None
    except ValueError as e:
        raise SyncError(f"bindPassword: {e}") from None
    if connector.bind_dn and not password:
        raise SyncError("bindDn is set but bindPassword is not")
    return password


def _tls(connector: LdapConnector) -> ldap3.Tls | None:
    """For ``ldaps://`` and StartTLS: the server certificate must verify against ``caFile`` (or
    the system's trust store); None for plain LDAP."""
    import ldap3

    if connector.url.lower().startswith("ldaps://") or connector.start_tls:
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=connector.ca_file)
    return None


def _connection(
    connector: LdapConnector, password: str | None, tls: ldap3.Tls | None, seconds: int
) -> ldap3.Connection:
    """A read-only connection, not yet open, that raises on every failure and follows no referral."""
    import ldap3

    server = ldap3.Server(connector.url, get_info=ldap3.NONE, connect_timeout=seconds, tls=tls)
    return ldap3.Connection(
        server,
        user=connector.bind_dn,
        password=password,
        auto_bind=ldap3.AUTO_BIND_NONE,
        raise_exceptions=True,
        receive_timeout=seconds,
        read_only=True,
        auto_referrals=False,
    )


def _user_attributes(connector: LdapConnector) -> list[str]:
    a = connector.attributes
    attributes = sorted({a.id, a.username, a.email, a.given_name, a.family_name, a.euid})
    if connector.membership == "memberOf":
        attributes.append("memberOf")
    return attributes


def _group_attributes(connector: LdapConnector) -> list[str]:
    attributes = [connector.attributes.group_name]
    if connector.membership == "member":
        attributes += ["member", "uniqueMember"]
    return attributes


def _paged(
    conn: ldap3.Connection, connector: LdapConnector, search: _Search, on_page: PageHook | None
) -> list[Entry]:
    """Every entry of ``search``, page after page until the server sends no more cookie (or
    ignores the control and sends everything at once)."""
    import ldap3

    entries: list[Entry] = []
    cookie: bytes | None = None
    pages = 0
    while True:
        conn.search(
            search.base,
            search.search_filter,
            search_scope=ldap3.SUBTREE,
            attributes=search.attributes,
            paged_size=connector.page_size,
            paged_cookie=cookie,
            time_limit=max(1, int(connector.timeout)),
        )
        result: LdapResult = conn.result or {}
        entries += _page_entries(conn.response or [], search)
        _check_result(result, search, len(entries))
        pages += 1
        if on_page is not None:
            on_page(search.what, pages)
        cookie = _next_cookie(result)
        if not cookie:
            break
    log.debug("searched", what=search.what, base=search.base, entries=len(entries), pages=pages)
    return entries


def _page_entries(response: list[LdapResult], search: _Search) -> list[Entry]:
    """The entries of one page; a search continuation reference (a referral) is a SyncError."""
    entries: list[Entry] = []
    for item in response:
        kind = item.get("type")
        if kind == "searchResEntry":
            entries.append(Entry(item["dn"], item.get("raw_attributes") or {}))
        elif kind == "searchResRef":
            refs = ", ".join(item.get("uri") or []) or "?"
            raise SyncError(
                f"{search.what} search under {search.base}: the server sent a referral ({refs}); "
                "referrals are not followed"
            )
    return entries


def _check_result(result: LdapResult, search: _Search, entries: int) -> None:
    """SyncError unless the page's result is success (``entries``: how many were read so far)."""
    code = result.get("result")
    if code == 0:
        return
    if code == _REFERRAL:
        refs = ", ".join(result.get("referrals") or []) or "?"
        raise SyncError(
            f"{search.what} search under {search.base}: referral to {refs}; referrals are not followed"
        )
    description = result.get("description") or f"result {code}"
    message = result.get("message")
    raise SyncError(
        f"{search.what} search under {search.base}: {description}"
        + (f" ({message})" if message else "")
        + f" after {entries} entries"
    )


def _next_cookie(result: LdapResult) -> bytes | None:
    """The paged results cookie for the next page; None when this page was the last, or when the
    server ignored the (non-critical) control and sent everything."""
    control = (result.get("controls") or {}).get(PAGED_RESULTS)
    if control is None:
        return None
    cookie: bytes | None = control.get("value", {}).get("cookie")
    return cookie
