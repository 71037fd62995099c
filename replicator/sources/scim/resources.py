"""The two SCIM resource types, User (with the enterprise extension) and Group, as scim2-models
classes, and how they are kept: the whole resource in the store's ``scim_resources`` table (all but
``id``, ``meta`` and the write-only ``password``), read back as its model with ``id`` and ``meta``
(its URL, its times, and its version: the weak ETag of its revision). A User is unique by its
userName folded (:func:`fold`), kept in an indexed column beside the document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from replicator.core.inventory import fold
from replicator.sources.scim.errors import ScimError

if TYPE_CHECKING:
    from scim2_models import EnterpriseUser, Group, Resource, User
    from starlette.requests import Request

    from replicator.sources.host import SourceHost
    from state import Store
    from state.store import ScimResource

PREFIX = "/scim/v2"


def models() -> tuple[type[User[EnterpriseUser]], type[Group]]:
    """The models of a User and of a Group."""
    from scim2_models import EnterpriseUser, Group, User

    return User[EnterpriseUser], Group


def model(rt: str) -> type[Resource[Any]]:
    """The model of resource type ``rt`` ("User" or "Group")."""
    user, group = models()
    return user if rt == "User" else group


def resource_type(request: Request) -> str:
    """The resource type a request's path names: "User" below ``/scim/v2/Users``, else "Group"."""
    return "User" if request.url.path.rstrip("/").split("/")[3] == "Users" else "Group"


def base_url(request: Request) -> str:
    """The URL of ``/scim/v2`` as the client reached it."""
    return f"{request.url.scheme}://{request.url.netloc}{PREFIX}"


def etag(revision: int) -> str:
    """The version of a resource at ``revision``: a weak ETag."""
    return f'W/"{revision}"'


def state_store(host: SourceHost) -> Store:
    """The state store (503 until the daemon has opened one)."""
    if host.store is None:
        raise ScimError(503, "the state store is not open yet")
    return host.store


def find(store: Store, rt: str, id: str) -> ScimResource:
    """The kept resource ``rt`` ``id`` (404 when there is none)."""
    stored = store.scim_resource(rt, id)
    if stored is None:
        raise ScimError(404, f"{rt} {id} not found")
    return stored


def as_model(request: Request, rt: str, stored: ScimResource) -> Resource[Any]:
    """A kept resource as its model, with ``id`` and ``meta``."""
    from scim2_models import Meta

    obj = model(rt).model_validate(dict(stored.document))
    obj.id = stored.id
    endpoint = "Users" if rt == "User" else "Groups"
    obj.meta = Meta(
        resource_type=rt,
        created=stored.created_at,
        last_modified=stored.updated_at,
        location=f"{base_url(request)}/{endpoint}/{stored.id}",
        version=etag(stored.revision),
    )
    return obj


def keep(store: Store, rt: str, id: str, obj: Resource[Any]) -> ScimResource:
    """Keep ``obj`` as the resource ``rt`` ``id`` (created or replaced); returns what is kept."""
    document = obj.model_dump(scim_ctx=None, mode="json", by_alias=True, exclude_none=True)
    for key in ("id", "meta", "password"):
        document.pop(key, None)
    keys = {(rt, id): name_key(rt, document)}
    return store.put_scim_resources([(rt, id, document)], name_keys=keys)[(rt, id)]


def name_key(rt: str, document: Mapping[str, object]) -> str | None:
    """What a kept resource is unique by (``Store.scim_ids_named``): a User's folded userName."""
    name = document.get("userName") if rt == "User" else None
    return fold(name) if isinstance(name, str) else None
