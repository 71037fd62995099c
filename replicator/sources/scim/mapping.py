"""SCIM resources as meshObjects of source ``scim``: a User is a meshUser named by its SCIM ``id``
(username, primary email, given and family name, and the euid from the configured attribute); a
Group is a meshUserGroup named by its ``id`` whose members are the ids of its User members. A
User's ``externalId`` is the meshUser's external id, and ``active: false`` deprovisions it (kept
for the bindings that name it, out of the inventory). Also the checks a write makes against the
kept resources: ``userName`` is unique (case-insensitively) and every member is a User or a Group
of this service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from replicator.core.inventory import fold
from replicator.sources.scim.errors import ScimError
from replicator.sources.scim.resources import models

if TYPE_CHECKING:
    from scim2_models import EnterpriseUser, Group, User

    from replicator.core.inventory import MeshUser, MeshUserGroup, Obj
    from replicator.sources.stored import Change
    from state import Store

SOURCE = "scim"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def user_change(id: str, user: User[EnterpriseUser], attribute: str) -> Change:
    """The change that puts User ``id`` as its meshUser, its euid from ``attribute``."""
    from replicator.sources.stored import Change, as_loaded

    change = Change(SOURCE, puts=as_loaded([_mesh_user(id, user, attribute)], f"SCIM User {id}"))
    if user.external_id:
        change.external_ids[("meshUser", id)] = user.external_id
    if user.active is False:
        change.deprovisions.add(("meshUser", id))
    return change


def group_change(id: str, group: Group, users: set[str]) -> Change:
    """The change that puts Group ``id`` as its meshUserGroup (its members among ``users``)."""
    from replicator.sources.stored import Change, as_loaded

    change = Change(SOURCE, puts=as_loaded([mesh_group(id, group, users)], f"SCIM Group {id}"))
    if group.external_id:
        change.external_ids[("meshUserGroup", id)] = group.external_id
    return change


def user_removal(store: Store, id: str) -> tuple[Change, list[tuple[str, Group]]]:
    """The change that removes User ``id``: the groups that hold it lose it and its meshUser is
    deprovisioned (kept for the bindings that name it, out of the inventory). Also returns those
    groups as they become, by id, to be kept."""
    from replicator.sources.stored import Change, as_loaded

    _, group_model = models()
    groups = []
    for g in store.scim_resources("Group"):
        members = g.document.get("members") or []
        if isinstance(members, list) and any(isinstance(m, dict) and m.get("value") == id for m in members):
            group = group_model.model_validate(dict(g.document))
            group.members = [m for m in group.members or [] if m.value != id]
            groups.append((g.id, group))
    change = Change(
        SOURCE,
        puts=as_loaded([mesh_group(gid, g, _users_among(store, g)) for gid, g in groups], "SCIM DELETE"),
        deprovisions={("meshUser", id)},
    )
    return change, groups


def _mesh_user(id: str, user: User[EnterpriseUser], attribute: str) -> MeshUser:
    from replicator.core.inventory import MeshUser

    emails = list(user.emails or [])
    primary = next((e for e in emails if e.primary), emails[0] if emails else None)
    name = user.name
    document = {
        "kind": "meshUser",
        "metadata": {"name": id},
        "spec": _without_none(
            {
                "username": user.user_name,
                "email": primary.value if primary is not None else None,
                "euid": euid(user, attribute),
                "givenName": name.given_name if name is not None else None,
                "familyName": name.family_name if name is not None else None,
            }
        ),
    }
    attributes = {"username": "userName", "email": "emails", "euid": f"{attribute} (the euid)"}
    return _valid(
        MeshUser, document, {**attributes, "givenName": "name.givenName", "familyName": "name.familyName"}
    )


def mesh_group(id: str, group: Group, users: set[str]) -> MeshUserGroup:
    """Group ``id`` as a meshUserGroup: its members that are in ``users``, each once, in order."""
    from replicator.core.inventory import MeshUserGroup

    members: list[str] = []
    for m in group.members or []:
        if m.value in users and m.value not in members:
            members.append(m.value)
    document = {
        "kind": "meshUserGroup",
        "metadata": {"name": id},
        "spec": _without_none({"members": members, "displayName": group.display_name}),
    }
    return _valid(MeshUserGroup, document, {"members": "members", "displayName": "displayName"})


_Model = TypeVar("_Model", bound="Obj")


def _valid(model: type[_Model], document: dict[str, Any], attributes: dict[str, str]) -> _Model:
    """``document`` as ``model``; a value it does not take (too long, say) is a 400
    ``invalidValue`` naming the SCIM attribute it came from (``attributes``: spec field -> SCIM
    attribute), before anything is written."""
    from pydantic import ValidationError

    try:
        return model.model_validate(document)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            loc = [str(part) for part in err["loc"]]
            field = loc[1] if len(loc) > 1 and loc[0] == "spec" else ".".join(loc)
            problems.append(f"{attributes.get(field, field)}: {err['msg']}")
        raise ScimError(400, "; ".join(problems), "invalidValue") from e


def euid(user: User[EnterpriseUser], attribute: str) -> str | None:
    """The SCIM attribute ``attribute`` of ``user`` (identity.scim.euidAttribute): ``userName``,
    ``externalId``, ``emails`` (the primary email, else the first), ``emails.<type>`` (the email
    of that type) or an enterprise extension attribute, by name or by its full URN."""
    if attribute == "userName":
        return user.user_name
    if attribute == "externalId":
        return user.external_id
    if attribute == "emails" or attribute.startswith("emails."):
        emails = list(user.emails or [])
        kind = attribute.partition(".")[2]
        if kind and kind != "primary":
            found = next((e for e in emails if e.type == kind), None)
        else:
            found = next((e for e in emails if e.primary), emails[0] if emails else None)
        return found.value if found is not None else None
    name = attribute.removeprefix(ENTERPRISE + ":")
    from scim2_models import EnterpriseUser

    ext = user[EnterpriseUser]
    if ext is None:
        return None
    value = ext.model_dump(mode="json", by_alias=True).get(name)
    return str(value) if value not in (None, "") else None


def member_users(store: Store, group: Group) -> set[str]:
    """The ids of the members of ``group`` that are kept Users (400 for a member that is no User
    or Group here); indexed lookups of the members, not a read of every User."""
    users = _users_among(store, group)
    groups = store.scim_ids_among("Group", {m.value for m in group.members or [] if m.value} - users)
    for m in group.members or []:
        if m.value not in users and m.value not in groups:
            raise ScimError(400, f"members: {m.value!r} is no User or Group of this service", "invalidValue")
    return users


def _users_among(store: Store, group: Group) -> set[str]:
    """The members of ``group`` that are kept Users."""
    return store.scim_ids_among("User", {m.value for m in group.members or [] if m.value})


def check_unique_user_name(store: Store, user: User[EnterpriseUser], id: str | None) -> None:
    """409 when another kept User than ``id`` has the ``userName`` of ``user`` (compared folded,
    see :func:`fold`; an indexed lookup, not a scan of every User)."""
    for other in store.scim_ids_named("User", fold(user.user_name or "")):
        if other != id:
            raise ScimError(409, f"userName {user.user_name!r} is already used by User {other}", "uniqueness")


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
