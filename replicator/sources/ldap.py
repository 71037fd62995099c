"""The LDAP connector: a directory read periodically into meshUsers and meshUserGroups.

One sync reads every user under ``userBase`` (and every group under ``groupBase`` when set) with
the RFC 2696 paged results control, maps the entries to meshObjects and writes them through
``replicator.sources.stored.apply`` under the source ``ldap:<name>``.

Safety: only a COMPLETE read changes anything. A connection, bind or TLS error, a timeout, a
size or admin limit, a failing page, a referral (not followed) or any non-success result writes
nothing and deprovisions nobody; the sync is recorded ``failed``. After a complete read, users of
this source that were not read are deprovisioned (kept, out of the inventory) and groups of this
source that were not read are deleted. A complete read with no users is refused unless
``allowEmpty``. Entries that cannot be written (bad name, euid taken, owned elsewhere, defined in a
file) are left out and reported; they never block the others.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from replicator.core.config import LdapConnector
from replicator.core.inventory import GroupSubject, MeshProjectBinding, MeshUser, MeshUserGroup
from replicator.logs import get_logger
from state import ObjectOwnedError, Store, StoreError

log = get_logger("replicator.sources.ldap")

PAGED_RESULTS = "1.2.840.113556.1.4.319"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
_GUID_ATTRIBUTES = {"objectguid", "msds-consistencyguid", "guid", "nsuniqueid-binary"}
_UNIQUE_MEMBER_UID = re.compile(r"#'[01]*'B$")

PageHook = Callable[[str, int], None]
"""Called after every page read: (``users`` or ``groups``, pages so far). For tests (an outage
between two pages) and progress logs."""


class SyncError(Exception):
    """The directory could not be read completely: nothing is written."""


@dataclass(frozen=True)
class Skipped:
    """An entry that was read but not written, and why."""

    kind: str
    dn: str
    name: str | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "dn": self.dn, "name": self.name, "reason": self.reason}


@dataclass
class SyncResult:
    connector: str
    outcome: str = "failed"
    """``complete`` or ``failed`` (nothing written)."""
    error: str | None = None
    users_read: int = 0
    groups_read: int = 0
    users: int = 0
    """Users written (created, updated or unchanged)."""
    groups: int = 0
    deprovisioned: list[str] = field(default_factory=list)
    deleted_groups: list[str] = field(default_factory=list)
    emptied_groups: list[str] = field(default_factory=list)
    """Groups the directory no longer has but a binding still names: kept without members."""
    skipped: list[Skipped] = field(default_factory=list)
    revision_before: int = 0
    revision_after: int = 0

    @property
    def source(self) -> str:
        return f"ldap:{self.connector}"

    @property
    def ok(self) -> bool:
        return self.outcome == "complete"

    @property
    def changed(self) -> bool:
        return self.revision_after != self.revision_before

    def as_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "source": self.source,
            "outcome": self.outcome,
            "error": self.error,
            "usersRead": self.users_read,
            "groupsRead": self.groups_read,
            "users": self.users,
            "groups": self.groups,
            "deprovisioned": self.deprovisioned,
            "deletedGroups": self.deleted_groups,
            "emptiedGroups": self.emptied_groups,
            "skipped": [s.as_json() for s in self.skipped],
            "revision": self.revision_after,
            "changed": self.changed,
        }

    def summary(self) -> str:
        if not self.ok:
            return f"ldap {self.connector}: sync failed, nothing changed: {self.error}"
        return (
            f"ldap {self.connector}: {self.users} users, {self.groups} groups written; "
            f"{len(self.deprovisioned)} deprovisioned, {len(self.deleted_groups)} groups deleted, "
            f"{len(self.skipped)} entries left out"
        )


# --- reading -------------------------------------------------------------------------------------


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


def render_value(raw: bytes, attribute: str) -> str:
    """An attribute value as text: a 16-byte GUID (Active Directory ``objectGUID``) as its UUID,
    UTF-8 text as is, other binary values as lowercase hex."""
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
    count = raw[1]
    authority = int.from_bytes(raw[2:8], "big")
    subs = [
        int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(count) if 12 + 4 * i <= len(raw)
    ]
    return "S-" + "-".join(str(x) for x in [raw[0], authority, *subs])


def normalize_dn(dn: str) -> str:
    """A DN in a form two spellings of the same DN share (case, spaces around separators)."""
    from ldap3.utils.dn import parse_dn

    try:
        parts = parse_dn(dn.strip())
    except Exception:
        return dn.strip().casefold()
    return ",".join(f"{attr.strip().casefold()}={value.strip().casefold()}" for attr, value, _ in parts)


def _describe(e: BaseException) -> str:
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
    import ldap3
    from ldap3.core.exceptions import LDAPException

    try:
        password = connector.bind_password.resolve() if connector.bind_password else None
    except ValueError as e:
        raise SyncError(f"bindPassword: {e}") from None
    if connector.bind_dn and not password:
        raise SyncError("bindDn is set but bindPassword is not")
    tls = None
    if connector.url.lower().startswith("ldaps://") or connector.start_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=connector.ca_file)
    step = f"connecting to {connector.url}"
    seconds = max(1, math.ceil(connector.timeout))  # ldap3 packs these as integers
    conn: Any = None
    try:
        server = ldap3.Server(connector.url, get_info=ldap3.NONE, connect_timeout=seconds, tls=tls)
        conn = ldap3.Connection(
            server,
            user=connector.bind_dn,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=True,
            receive_timeout=seconds,
            read_only=True,
            auto_referrals=False,
        )
        conn.open()
        if connector.start_tls:
            step = "StartTLS"
            conn.start_tls()
        step = f"bind as {connector.bind_dn}" if connector.bind_dn else "anonymous bind"
        if not conn.bind():
            raise SyncError(f"{step}: {conn.result.get('description')}")
        a = connector.attributes
        user_attrs = sorted({a.id, a.username, a.email, a.given_name, a.family_name, a.euid})
        if connector.membership == "memberOf":
            user_attrs.append("memberOf")
        step = f"user search under {connector.user_base}"
        users = _paged(
            conn, connector, connector.user_base, connector.user_filter, user_attrs, "users", on_page
        )
        groups = None
        if connector.group_base:
            group_attrs = [a.group_name]
            if connector.membership == "member":
                group_attrs += ["member", "uniqueMember"]
            step = f"group search under {connector.group_base}"
            groups = _paged(
                conn, connector, connector.group_base, connector.group_filter, group_attrs, "groups", on_page
            )
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


def _paged(
    conn: Any,
    connector: LdapConnector,
    base: str,
    search_filter: str,
    attributes: list[str],
    what: str,
    on_page: PageHook | None,
) -> list[Entry]:
    import ldap3

    entries: list[Entry] = []
    cookie: bytes | None = None
    pages = 0
    while True:
        conn.search(
            base,
            search_filter,
            search_scope=ldap3.SUBTREE,
            attributes=attributes,
            paged_size=connector.page_size,
            paged_cookie=cookie,
            time_limit=max(1, int(connector.timeout)),
        )
        result = conn.result or {}
        code = result.get("result")
        for item in conn.response or []:
            kind = item.get("type")
            if kind == "searchResEntry":
                entries.append(Entry(item["dn"], item.get("raw_attributes") or {}))
            elif kind == "searchResRef":
                refs = ", ".join(item.get("uri") or []) or "?"
                raise SyncError(
                    f"{what} search under {base}: the server sent a referral ({refs}); "
                    "referrals are not followed"
                )
        if code != 0:
            description = result.get("description") or f"result {code}"
            if code == 10:
                refs = ", ".join(result.get("referrals") or []) or "?"
                raise SyncError(f"{what} search under {base}: referral to {refs}; referrals are not followed")
            message = result.get("message")
            raise SyncError(
                f"{what} search under {base}: {description}"
                + (f" ({message})" if message else "")
                + f" after {len(entries)} entries"
            )
        pages += 1
        if on_page is not None:
            on_page(what, pages)
        control = (result.get("controls") or {}).get(PAGED_RESULTS)
        if control is None:  # the server ignored the (non-critical) control: it sent everything
            break
        cookie = control.get("value", {}).get("cookie")
        if not cookie:
            break
    log.debug("searched", what=what, base=base, entries=len(entries), pages=pages)
    return entries


# --- mapping and writing -------------------------------------------------------------------------


@dataclass
class _Mapped:
    users: list[MeshUser]
    groups: list[MeshUserGroup]
    external_ids: dict[tuple[str, str], str]
    read_users: set[str]
    """Names of every user read (written or left out): they are not deprovisioned."""
    read_groups: set[str]
    skipped: list[Skipped]


def _map(
    connector: LdapConnector,
    directory: Directory,
    *,
    source: str,
    file_keys: set[tuple[str, str]],
    owners: dict[tuple[str, str], str],
    foreign_euids: dict[str, str],
    stored_euids: dict[str, str],
) -> _Mapped:
    a = connector.attributes
    skipped: list[Skipped] = []
    users: list[MeshUser] = []
    external_ids: dict[tuple[str, str], str] = {}
    read_users: set[str] = set()
    by_dn: dict[str, str] = {}
    names: dict[str, str] = {}  # name -> dn
    candidates: list[tuple[Entry, str, dict[str, str]]] = []

    def skip(kind: str, entry: Entry, name: str | None, reason: str) -> None:
        skipped.append(Skipped(kind, entry.dn, name, reason))

    def unwritable(kind: str, name: str, label: str) -> str | None:
        """Why this source cannot write ``kind`` ``name`` (``label`` prefixes the name in the
        message), or None."""
        if not _NAME.match(name):
            return f"{label}{name!r} is not a valid {kind} name ({_NAME.pattern})"
        if (kind, name) in file_keys:
            return "defined in an inventory file"
        owner = owners.get((kind, name))
        if owner is not None and owner != source:
            return f"owned by {owner}"
        return None

    for entry in sorted(directory.users, key=lambda e: normalize_dn(e.dn)):
        name = entry.first(a.id)
        if name is None:
            skip("meshUser", entry, None, f"no {a.id} attribute (the name attribute)")
            continue
        if name in names:
            skip("meshUser", entry, name, f"{a.id} {name!r} is also the {a.id} of {names[name]}")
            continue
        names[name] = entry.dn
        read_users.add(name)
        why = unwritable("meshUser", name, f"{a.id} ")
        if why is not None:
            skip("meshUser", entry, name, why)
            continue
        fields = {
            "username": entry.first(a.username),
            "email": entry.first(a.email),
            "givenName": entry.first(a.given_name),
            "familyName": entry.first(a.family_name),
            "euid": entry.first(a.euid),
        }
        candidates.append((entry, name, {k: v for k, v in fields.items() if v is not None}))

    # euids: unique (case-insensitively) across the whole inventory. One taken by a user of
    # another source or a file leaves ours out; between two of ours, the one that already had it
    # keeps it, else the first by DN.
    claimed: dict[str, str] = {}

    def keeps_first(c: tuple[Entry, str, dict[str, str]]) -> tuple[bool, str]:
        return stored_euids.get(c[2].get("euid", "").casefold()) != c[1], normalize_dn(c[0].dn)

    for entry, name, spec in sorted(candidates, key=keeps_first):
        euid = spec.get("euid")
        if euid:
            folded = euid.casefold()
            if folded in foreign_euids:
                skip("meshUser", entry, name, f"euid {euid!r} is also the euid of {foreign_euids[folded]}")
                continue
            if folded in claimed:
                skip("meshUser", entry, name, f"euid {euid!r} is also the euid of {claimed[folded]}")
                continue
        try:
            user = MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": name}, "spec": spec})
        except Exception as e:
            skip("meshUser", entry, name, f"not a valid meshUser: {e}")
            continue
        if euid:
            claimed[euid.casefold()] = f"meshUser {name} ({entry.dn})"
        users.append(user)
        external_ids[("meshUser", name)] = entry.dn
        by_dn[normalize_dn(entry.dn)] = name
    users.sort(key=lambda u: u.metadata.name)

    groups: list[MeshUserGroup] = []
    read_groups: set[str] = set()
    if directory.groups is not None:
        group_names: dict[str, str] = {}
        members_of: dict[str, set[str]] = {}
        if connector.membership == "memberOf":
            for entry in directory.users:
                member = by_dn.get(normalize_dn(entry.dn))
                if member is None:
                    continue
                for raw in entry.values("memberOf"):
                    members_of.setdefault(normalize_dn(raw.decode("utf-8", "replace")), set()).add(member)
        for entry in sorted(directory.groups, key=lambda e: normalize_dn(e.dn)):
            name = entry.first(a.group_name)
            if name is None:
                skip("meshUserGroup", entry, None, f"no {a.group_name} attribute (the group name attribute)")
                continue
            if name in group_names:
                why = f"{a.group_name} {name!r} is also the name of {group_names[name]}"
                skip("meshUserGroup", entry, name, why)
                continue
            group_names[name] = entry.dn
            read_groups.add(name)
            why = unwritable("meshUserGroup", name, "")
            if why is not None:
                skip("meshUserGroup", entry, name, why)
                continue
            if connector.membership == "memberOf":
                members = members_of.get(normalize_dn(entry.dn), set())
            else:
                members = set()
                for raw in [*entry.values("member"), *entry.values("uniqueMember")]:
                    dn = _UNIQUE_MEMBER_UID.sub("", raw.decode("utf-8", "replace"))
                    member = by_dn.get(normalize_dn(dn))
                    if member is not None:  # outside the user base, or left out: ignored
                        members.add(member)
            groups.append(
                MeshUserGroup.model_validate(
                    {
                        "kind": "meshUserGroup",
                        "metadata": {"name": name},
                        "spec": {"members": sorted(members)},
                    }
                )
            )
            external_ids[("meshUserGroup", name)] = entry.dn
    groups.sort(key=lambda g: g.metadata.name)
    return _Mapped(users, groups, external_ids, read_users, read_groups, skipped)


def sync(
    connector: LdapConnector,
    config_path: Path,
    store: Store,
    *,
    on_page: PageHook | None = None,
) -> SyncResult:
    """One complete sync of ``connector`` into ``store``, or a failed one that changed nothing.
    The outcome is recorded with ``store.start_sync/finish_sync`` under ``ldap:<name>``."""
    from replicator.inputs.loader import InputError, load
    from replicator.sources import stored

    result = SyncResult(connector.name)
    source = result.source
    result.revision_before = result.revision_after = store.objects_revision()
    store.start_sync(source)

    def fail(error: str) -> SyncResult:
        result.outcome, result.error = "failed", error
        result.revision_after = store.objects_revision()
        log.error("ldap sync failed, nothing changed", connector=connector.name, error=error)
        store.finish_sync(source, "failed", users=result.users_read, groups=result.groups_read, error=error)
        return result

    try:
        directory = read_directory(connector, on_page)
    except SyncError as e:
        return fail(str(e))
    result.users_read = len(directory.users)
    result.groups_read = len(directory.groups or [])
    if not directory.users and not connector.allow_empty:
        return fail(
            f"the directory returned no users (userBase {connector.user_base}, userFilter "
            f"{connector.user_filter}): refused, nobody deprovisioned (set allowEmpty: true to accept)"
        )

    try:
        loaded = load(config_path, store)
    except InputError as e:
        return fail(_problems(e))
    everything = store.list_objects(include_deprovisioned=True)
    owners = {(o.kind, o.key): o.source for o in everything}
    mine = [o for o in everything if o.source == source]
    stored_euids: dict[str, str] = {}
    for o in mine:
        spec = o.document.get("spec")
        euid = spec.get("euid") if isinstance(spec, dict) else None
        if o.kind == "meshUser" and isinstance(euid, str):
            stored_euids[euid.casefold()] = o.key
    foreign_euids: dict[str, str] = {}
    group_refs: dict[str, str] = {}
    for lo in loaded.objects:
        obj = lo.obj
        key = ("meshUser", str(getattr(obj.metadata, "name", "")))
        if (
            isinstance(obj, MeshUser)
            and obj.spec.euid
            and (owners.get(key) != source or key in loaded.file_keys)
        ):
            foreign_euids[obj.spec.euid.casefold()] = lo.label
        if isinstance(obj, MeshProjectBinding):
            for subject in obj.spec.subjects:
                if isinstance(subject, GroupSubject):
                    group_refs.setdefault(subject.group, lo.label)

    mapped = _map(
        connector,
        directory,
        source=source,
        file_keys=set(loaded.file_keys),
        owners=owners,
        foreign_euids=foreign_euids,
        stored_euids=stored_euids,
    )
    for s in mapped.skipped:
        log.warning("ldap entry left out", connector=connector.name, dn=s.dn, name=s.name, reason=s.reason)

    deprovisions = {
        ("meshUser", o.key)
        for o in mine
        if o.kind == "meshUser" and o.deprovisioned_at is None and o.key not in mapped.read_users
    }
    deletes: set[tuple[str, str]] = set()
    emptied: list[MeshUserGroup] = []
    for o in mine:
        # (Without groupBase no group is read: the groups this connector wrote before go too.)
        if o.kind != "meshUserGroup" or o.key in mapped.read_groups:
            continue
        if o.key in group_refs:
            emptied.append(
                MeshUserGroup.model_validate(
                    {"kind": "meshUserGroup", "metadata": {"name": o.key}, "spec": {"members": []}}
                )
            )
            log.warning(
                "ldap group gone but still bound: kept without members",
                connector=connector.name,
                group=o.key,
                binding=group_refs[o.key],
            )
        else:
            deletes.add(("meshUserGroup", o.key))

    puts = [*mapped.users, *mapped.groups, *emptied]
    change = stored.Change(
        source,
        puts=stored.as_loaded(puts, f"ldap:{connector.name}"),
        deletes=deletes,
        deprovisions=deprovisions,
        external_ids={
            **mapped.external_ids,
            **{("meshUserGroup", g.metadata.name): _external_id(mine, g.metadata.name) for g in emptied},
        },
    )
    try:
        _, revision = stored.apply(config_path, store, change)
    except InputError as e:
        return fail("the change would not validate: " + _problems(e))
    except ObjectOwnedError as e:
        return fail(str(e))
    except StoreError as e:
        return fail(str(e))
    result.outcome = "complete"
    result.revision_after = revision
    result.users, result.groups = len(mapped.users), len(mapped.groups)
    result.deprovisioned = sorted(k for _, k in deprovisions)
    result.deleted_groups = sorted(k for _, k in deletes)
    result.emptied_groups = sorted(g.metadata.name for g in emptied)
    result.skipped = mapped.skipped
    store.finish_sync(
        source, "complete", users=result.users, groups=result.groups, deprovisioned=len(deprovisions)
    )
    log.info(
        "ldap sync complete",
        connector=connector.name,
        users=result.users,
        groups=result.groups,
        deprovisioned=len(deprovisions),
        deleted_groups=len(deletes),
        left_out=len(mapped.skipped),
        revision=revision,
    )
    return result


def _external_id(objects: Iterable[Any], key: str) -> str:
    for o in objects:
        if o.kind == "meshUserGroup" and o.key == key:
            return str(o.external_id or "")
    return ""


def _problems(e: Any) -> str:
    problems = [str(p) for p in e.problems]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


def lease_name(connector: LdapConnector) -> str:
    return f"ldap-sync:{connector.name}"


def sync_with_lease(
    connector: LdapConnector,
    config_path: Path,
    store: Store,
    holder: str,
    *,
    on_page: PageHook | None = None,
) -> SyncResult | None:
    """``sync`` while holding the lease ``ldap-sync:<name>`` (one replica syncs at a time); None
    when another holder has it."""
    ttl = timedelta(seconds=max(120.0, 4 * connector.timeout))
    name = lease_name(connector)
    token = store.acquire_lease(name, holder, ttl)
    if token is None:
        log.info(
            "another replica is syncing this connector",
            connector=connector.name,
            holder=store.lease_holder(name),
        )
        return None

    def renew(what: str, page: int) -> None:
        # Every page extends the lease; a lease lost meanwhile (another replica took it after it
        # expired) fails this read, so two replicas never both write a sync.
        if not store.renew_lease(name, holder, token, ttl):
            raise SyncError(f"lost the lease {name} while reading {what} (page {page})")
        if on_page is not None:
            on_page(what, page)

    try:
        return sync(connector, config_path, store, on_page=renew)
    finally:
        try:
            store.release_lease(lease_name(connector), holder)
        except StoreError as e:
            log.error("cannot release the ldap sync lease", connector=connector.name, error=str(e))
