"""The discovery endpoints: what this service provider supports (ServiceProviderConfig: PATCH,
filters up to the page size, ETags and a bearer token; no bulk, sort or password change), the
schemas of User, the enterprise extension and Group (Schemas) and the two resource types
(ResourceTypes). They answer GET only, and their lists take no filter (403)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, cast

from replicator.sources.scim.errors import ScimError, json_answer
from replicator.sources.scim.query import max_page_size
from replicator.sources.scim.resources import base_url, models

if TYPE_CHECKING:
    from scim2_models import ResourceType, Schema
    from starlette.requests import Request
    from starlette.responses import Response

    from replicator.sources.host import SourceHost
    from replicator.sources.scim.provider import Endpoint


def endpoints(host: SourceHost) -> list[tuple[str, Endpoint]]:
    """The discovery endpoints by their path below ``/scim/v2``."""
    return [
        ("ServiceProviderConfig", partial(service_provider_config, host)),
        ("Schemas", schemas),
        ("Schemas/{id:path}", schema),
        ("ResourceTypes", resource_types),
        ("ResourceTypes/{id}", resource_type),
    ]


async def service_provider_config(host: SourceHost, request: Request) -> Response:
    from scim2_models import (
        AuthenticationScheme,
        Bulk,
        ChangePassword,
        Context,
        ETag,
        Filter,
        Meta,
        Patch,
        ServiceProviderConfig,
        Sort,
    )

    spc = ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=max_page_size(host)),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=True),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type.oauthbearertoken,
                name="Bearer token",
                description="Authorization: Bearer <identity.scim.token>",
                primary=True,
            )
        ],
        meta=Meta(
            resource_type="ServiceProviderConfig", location=f"{base_url(request)}/ServiceProviderConfig"
        ),
    )
    return json_answer(spc.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


async def schemas(request: Request) -> Response:
    return _list(request, _schemas(request))


async def schema(request: Request) -> Response:
    return _one(_schemas(request), request.path_params["id"], "Schema")


async def resource_types(request: Request) -> Response:
    return _list(request, _resource_types(request))


async def resource_type(request: Request) -> Response:
    return _one(_resource_types(request), request.path_params["id"], "ResourceType")


def _schemas(request: Request) -> list[Schema]:
    from scim2_models import EnterpriseUser, Group, Meta, User

    out = []
    for model in (User, EnterpriseUser, Group):
        schema = model.to_schema()
        schema.meta = Meta(resource_type="Schema", location=f"{base_url(request)}/Schemas/{schema.id}")
        out.append(schema)
    return out


def _resource_types(request: Request) -> list[ResourceType]:
    from scim2_models import Meta, ResourceType

    out = []
    for model in models():
        rt = ResourceType.from_resource(model)
        rt.meta = Meta(resource_type="ResourceType", location=f"{base_url(request)}/ResourceTypes/{rt.id}")
        out.append(rt)
    return out


def _list(request: Request, items: list[Schema] | list[ResourceType]) -> Response:
    from scim2_models import Context, ListResponse

    if request.query_params.get("filter"):
        raise ScimError(403, "filtering discovery resources is not supported (RFC 7644 4)")
    list_model = cast("type[ListResponse[Any]]", ListResponse[type(items[0])])  # type: ignore[misc]
    body = list_model(
        total_results=len(items), start_index=1, items_per_page=len(items), resources=items
    ).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return json_answer(body)


def _one(items: list[Schema] | list[ResourceType], id: str, what: str) -> Response:
    from scim2_models import Context

    for item in items:
        if item.id == id:
            return json_answer(item.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
    raise ScimError(404, f"{what} {id} not found")
