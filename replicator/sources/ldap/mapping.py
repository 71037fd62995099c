"""Directory entries as meshObjects: user entries as meshUsers, group entries as meshUserGroups
with their members, and every entry that cannot be written as a ``Skipped`` with the reason.

Entries are taken in DN order. An entry is left out when it has no name, when an entry before it
has the same name, when the name is not a valid object name, when an inventory file defines the
object or another source owns it; a user also when its euid is another user's or it is not a valid
meshUser. Leaving an entry out never blocks the others. Every name read counts as read, written or
left out: the sync neither deprovisions such a user nor deletes such a group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from replicator.core.config import LdapAttributes, LdapConnector
from replicator.core.inventory import MeshUser, MeshUserGroup, fold
from replicator.sources.ldap.directory import Directory, Entry, normalize_dn

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
_UNIQUE_MEMBER_UID = re.compile(r"#'[01]*'B$")
"""The optional unique identifier a ``uniqueMember`` value may end with (``dn#'0101'B``)."""


@dataclass(frozen=True)
class Skipped:
    """An entry that was read but not written, and why."""

    kind: str
    dn: str
    name: str | None
    reason: str

    def as_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "dn": self.dn, "name": self.name, "reason": self.reason}


@dataclass(frozen=True)
class Existing:
    """What the store and the inventory files already hold, as far as the mapping needs it."""

    source: str
    """``ldap:<name>``: the source of the objects this connector writes."""
    file_keys: frozenset[tuple[str, str]]
    """(kind, name) of every object an inventory file defines."""
    owners: dict[tuple[str, str], str]
    """(kind, name) of every stored object -> its source."""
    foreign_euids: dict[str, str]
    """Case-folded euid -> the meshUser (of an inventory file or another source) that has it."""
    stored_euids: dict[str, str]
    """Case-folded euid -> the name of this source's stored meshUser that has it."""

    def unwritable(self, kind: str, name: str, label: str) -> str | None:
        """Why this source cannot write ``kind`` ``name`` (``label`` prefixes the name in the
        message), or None."""
        if not _NAME.match(name):
            return f"{label}{name!r} is not a valid {kind} name ({_NAME.pattern})"
        if (kind, name) in self.file_keys:
            return "defined in an inventory file"
        owner = self.owners.get((kind, name))
        if owner is not None and owner != self.source:
            return f"owned by {owner}"
        return None


@dataclass
class Mapped:
    """The meshObjects a directory maps to, sorted by name, and what was left out."""

    users: list[MeshUser] = field(default_factory=list)
    groups: list[MeshUserGroup] = field(default_factory=list)
    external_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, name) of every object written -> the DN of its entry."""
    read_users: set[str] = field(default_factory=set)
    """Names of every user read (written or left out): they are not deprovisioned."""
    read_groups: set[str] = field(default_factory=set)
    """Names of every group read (written or left out): they are not deleted."""
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, kind: str, entry: Entry, name: str | None, reason: str) -> None:
        self.skipped.append(Skipped(kind, entry.dn, name, reason))


class _Naming(NamedTuple):
    """How the entries of one kind are named, and how the reasons to leave one out read."""

    kind: str
    attribute: str
    """The attribute whose value is the name."""
    role: str
    """What the attribute is, in ``no <attribute> attribute (the <role> attribute)``."""
    also: str
    """In ``<attribute> '<name>' is also the <also> of <DN>``."""
    label: str
    """Prefixes the name in ``'<name>' is not a valid <kind> name``."""


class _Candidate(NamedTuple):
    """A user entry with a name this source can write, and the meshUser spec it maps to."""

    entry: Entry
    name: str
    spec: dict[str, str]


def map_directory(connector: LdapConnector, directory: Directory, existing: Existing) -> Mapped:
    """The meshUsers and meshUserGroups ``directory`` maps to, the DN each comes from, the names
    read and the entries left out (users first, then groups, each in DN order)."""
    a = connector.attributes
    mapped = Mapped()
    naming = _Naming("meshUser", a.id, "name", a.id, f"{a.id} ")
    named, mapped.read_users = _named(directory.users, naming, existing, mapped)
    candidates = [_Candidate(entry, name, _user_spec(entry, a)) for entry, name in named]
    by_dn = _admit_users(candidates, existing, mapped)
    mapped.users.sort(key=lambda u: u.metadata.name)
    if directory.groups is not None:
        _map_groups(connector, directory.users, directory.groups, by_dn, existing, mapped)
    mapped.groups.sort(key=lambda g: g.metadata.name)
    return mapped


def mesh_user_group(name: str, members: Iterable[str]) -> MeshUserGroup:
    return MeshUserGroup.model_validate(
        {"kind": "meshUserGroup", "metadata": {"name": name}, "spec": {"members": sorted(members)}}
    )


def _named(
    entries: list[Entry], naming: _Naming, existing: Existing, mapped: Mapped
) -> tuple[list[tuple[Entry, str]], set[str]]:
    """The entries (in DN order) this source can write, with their names, and the names of every
    entry read. An entry without a name, with the name of an entry before it, or with a name
    ``existing`` says this source cannot write is left out."""
    names: dict[str, str] = {}  # name -> dn
    named: list[tuple[Entry, str]] = []
    for entry in sorted(entries, key=lambda e: normalize_dn(e.dn)):
        name = entry.first(naming.attribute)
        if name is None:
            why = f"no {naming.attribute} attribute (the {naming.role} attribute)"
            mapped.skip(naming.kind, entry, None, why)
            continue
        if name in names:
            why = f"{naming.attribute} {name!r} is also the {naming.also} of {names[name]}"
            mapped.skip(naming.kind, entry, name, why)
            continue
        names[name] = entry.dn
        unwritable = existing.unwritable(naming.kind, name, naming.label)
        if unwritable is not None:
            mapped.skip(naming.kind, entry, name, unwritable)
            continue
        named.append((entry, name))
    return named, set(names)


def _user_spec(entry: Entry, a: LdapAttributes) -> dict[str, str]:
    """The meshUser spec fields the entry has values for."""
    fields = {
        "username": entry.first(a.username),
        "email": entry.first(a.email),
        "givenName": entry.first(a.given_name),
        "familyName": entry.first(a.family_name),
        "euid": entry.first(a.euid),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _admit_users(candidates: list[_Candidate], existing: Existing, mapped: Mapped) -> dict[str, str]:
    """Map the candidates to meshUsers; the name of each user written by its normalised DN.

    euids are unique (case-insensitively) across the whole inventory. One taken by a user of
    another source or an inventory file leaves ours out; between two of ours, the one that already
    had it keeps it, else the first by DN. A candidate that is not a valid meshUser is left out.
    """
    claimed: dict[str, str] = {}
    by_dn: dict[str, str] = {}
    for entry, name, spec in sorted(candidates, key=lambda c: _keeps_first(c, existing.stored_euids)):
        euid = spec.get("euid")
        holder = _euid_holder(euid, existing, claimed) if euid else None
        if holder is not None:
            mapped.skip("meshUser", entry, name, f"euid {euid!r} is also the euid of {holder}")
            continue
        try:
            user = MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": name}, "spec": spec})
        except Exception as e:
            mapped.skip("meshUser", entry, name, f"not a valid meshUser: {e}")
            continue
        if euid:
            claimed[fold(euid)] = f"meshUser {name} ({entry.dn})"
        mapped.users.append(user)
        mapped.external_ids[("meshUser", name)] = entry.dn
        by_dn[normalize_dn(entry.dn)] = name
    return by_dn


def _keeps_first(candidate: _Candidate, stored_euids: dict[str, str]) -> tuple[bool, str]:
    """Sort key: the user that already has its euid in the store first, then by DN."""
    held = stored_euids.get(fold(candidate.spec.get("euid", ""))) != candidate.name
    return held, normalize_dn(candidate.entry.dn)


def _euid_holder(euid: str, existing: Existing, claimed: dict[str, str]) -> str | None:
    """Who has ``euid`` already: a user of another source or a file, or one admitted before."""
    folded = fold(euid)
    if folded in existing.foreign_euids:
        return existing.foreign_euids[folded]
    if folded in claimed:
        return claimed[folded]
    return None


def _map_groups(
    connector: LdapConnector,
    users: list[Entry],
    groups: list[Entry],
    by_dn: dict[str, str],
    existing: Existing,
    mapped: Mapped,
) -> None:
    """Map the group entries to meshUserGroups whose members are the users written (``by_dn``);
    a member outside the user base, or left out, is ignored."""
    a = connector.attributes
    naming = _Naming("meshUserGroup", a.group_name, "group name", "name", "")
    members_of = _members_of(users, by_dn) if connector.membership == "memberOf" else {}
    named, mapped.read_groups = _named(groups, naming, existing, mapped)
    for entry, name in named:
        if connector.membership == "memberOf":
            members = members_of.get(normalize_dn(entry.dn), set())
        else:
            members = _members(entry, by_dn)
        mapped.groups.append(mesh_user_group(name, members))
        mapped.external_ids[("meshUserGroup", name)] = entry.dn


def _members_of(users: list[Entry], by_dn: dict[str, str]) -> dict[str, set[str]]:
    """Membership from the users' ``memberOf``: normalised group DN -> names of its members."""
    members_of: dict[str, set[str]] = {}
    for entry in users:
        member = by_dn.get(normalize_dn(entry.dn))
        if member is None:
            continue
        for raw in entry.values("memberOf"):
            members_of.setdefault(normalize_dn(raw.decode("utf-8", "replace")), set()).add(member)
    return members_of


def _members(entry: Entry, by_dn: dict[str, str]) -> set[str]:
    """Membership from the group's ``member`` and ``uniqueMember`` values."""
    members: set[str] = set()
    for raw in [*entry.values("member"), *entry.values("uniqueMember")]:
        dn = _UNIQUE_MEMBER_UID.sub("", raw.decode("utf-8", "replace"))
        member = by_dn.get(normalize_dn(dn))
        if member is not None:
            members.add(member)
    return members
