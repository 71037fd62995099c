"""What a request asks for beyond the resource itself: a list or search query (``filter``,
``startIndex``, ``count``, at most the configured page size), the attributes an answer carries
(``attributes``/``excludedAttributes``) and the ETag preconditions (``If-Match``,
``If-None-Match``)."""

from __future__ import annotations

import json
import unicodedata
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from replicator.sources.scim.errors import ScimError, from_exception, json_answer
from replicator.sources.scim.resources import as_model, etag, model

if TYPE_CHECKING:
    from scim2_models import Resource, ResponseParameters
    from scim2_models.path.expressions import FilterNode
    from starlette.requests import Request

    from replicator.sources.host import SourceHost
    from state import Store
    from state.store import ScimResource


def max_page_size(host: SourceHost) -> int:
    """Most resources one list answer holds (identity.scim.maxPageSize)."""
    v = host.validated
    return v.config.identity.scim.max_page_size if v is not None else 500


def int_param(value: Any, name: str, default: int) -> int:
    """The integer query parameter ``name`` (``default`` when absent or empty)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ScimError(400, f"{name} must be an integer, not {value!r}", "invalidValue")
    try:
        return int(value)
    except ValueError as e:
        raise ScimError(400, f"{name} must be an integer, not {value!r}", "invalidValue") from e


def parameters(
    attributes: object, excluded: object, model: type[Resource[Any]]
) -> ResponseParameters[Any] | None:
    """``attributes``/``excludedAttributes`` (comma-separated or lists) for ``model``, or None
    when neither is given."""
    from scim2_models import ResponseParameters

    if not attributes and not excluded:
        return None
    given = {"attributes": attributes, "excludedAttributes": excluded}
    try:
        return ResponseParameters[model].model_validate({k: v for k, v in given.items() if v})  # type: ignore[valid-type]
    except Exception as e:
        err = from_exception(e)
        raise ScimError(400, f"attributes/excludedAttributes: {err.detail}", "invalidPath") from e


def response_parameters(request: Request, model: type[Resource[Any]]) -> ResponseParameters[Any] | None:
    """The ``attributes``/``excludedAttributes`` of a request's query string for ``model``."""
    q = request.query_params
    return parameters(q.get("attributes"), q.get("excludedAttributes"), model)


def search(request: Request, store: Store, rts: list[str], params: dict[str, Any], page: int) -> Response:
    """The ListResponse of the resources of types ``rts`` that the query ``params`` (query string
    or SearchRequest) selects, in pages of at most ``page``. Over several resource types (a search
    at the root) a name only one type knows is no error: ``attributes``/``excludedAttributes``
    that do not apply to a type leave its resources with their default attributes, and a filter
    attribute a type lacks matches none of its resources."""
    from scim2_models import Context, ListResponse, ScimFilter

    start = max(int_param(params.get("startIndex"), "startIndex", 1), 1)
    count = min(max(int_param(params.get("count"), "count", page), 0), page)
    text = params.get("filter")
    if text is not None and not isinstance(text, str):
        raise ScimError(400, "filter must be a string", "invalidFilter")
    found: list[tuple[str, Resource[Any]]] = []
    selected: dict[str, ResponseParameters[Any] | None] = {}
    for rt in rts:
        rt_model = model(rt)
        try:
            selected[rt] = parameters(params.get("attributes"), params.get("excludedAttributes"), rt_model)
        except ScimError:
            if len(rts) == 1:
                raise
            selected[rt] = None  # names attributes of the other resource type only
        stored = store.scim_resources(rt)
        if text:
            try:
                flt = ScimFilter[rt_model](text)  # type: ignore[valid-type]
                stored = _candidates(flt.ast, stored)
                resources = [as_model(request, rt, r) for r in stored]
                resources = [r for r in resources if flt.match(r, strict=len(rts) == 1)]
            except ScimError:
                raise
            except Exception as e:
                err = from_exception(e)
                raise ScimError(400, f"filter {text!r}: {err.detail}", "invalidFilter") from e
        else:
            resources = [as_model(request, rt, r) for r in stored]
        found += [(rt, r) for r in resources]
    items = found[start - 1 : start - 1 + count]
    body: dict[str, Any] = {
        "schemas": [str(ListResponse.__schema__)],
        "totalResults": len(found),
        "startIndex": start,
        "itemsPerPage": len(items),
    }
    if items:
        body["Resources"] = [
            r.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=selected[rt])
            for rt, r in items
        ]
    return json_answer(body)


def _folded(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _candidates(ast: FilterNode, stored: list[ScimResource]) -> list[ScimResource]:
    """A quick superset of the resources a filter ``attr eq "text"`` matches (Entra ID and Okta
    look users up this way before every change): those whose document contains the text. The
    filter itself then decides, so this only saves building every resource."""
    from scim2_models.path.expressions import Comparison

    if not isinstance(ast, Comparison) or ast.op.value != "eq" or not isinstance(ast.value, str):
        return stored
    attr = ast.attr_path.attr.lower()
    if attr == "meta" or ast.attr_path.uri:
        return stored
    if attr == "id":
        return [r for r in stored if r.id.casefold() == ast.value.casefold()]
    needle = _folded(json.dumps(ast.value, ensure_ascii=False)[1:-1])
    return [r for r in stored if needle in _folded(json.dumps(r.document, ensure_ascii=False))]


def if_match(request: Request, stored: ScimResource) -> None:
    """412 unless ``If-Match`` (when sent) names the current version of ``stored`` or ``*``."""
    wanted = request.headers.get("if-match")
    if wanted is None:
        return
    tags = {t.strip() for t in wanted.split(",")}
    current = etag(stored.revision)
    if "*" not in tags and current not in tags and current.removeprefix("W/") not in tags:
        raise ScimError(412, f"If-Match {wanted} does not match the current version {current}")


def not_modified(request: Request, stored: ScimResource) -> Response | None:
    """A 304 when ``If-None-Match`` names the current version of ``stored``, else None."""
    current = etag(stored.revision)
    if request.headers.get("if-none-match") == current:
        return Response(status_code=304, headers={"ETag": current})
    return None
