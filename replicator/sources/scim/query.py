"""What a request asks for beyond the resource itself: a list or search query (``filter``,
``startIndex``, ``count``, at most the configured page size), the attributes an answer carries
(``attributes``/``excludedAttributes``) and the ETag preconditions (``If-Match``,
``If-None-Match``)."""

from __future__ import annotations

import json
import unicodedata
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from replicator.core.inventory import fold
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
        params = ResponseParameters[model].model_validate({k: v for k, v in given.items() if v})  # type: ignore[valid-type]
    except Exception as e:
        err = from_exception(e)
        raise ScimError(400, f"attributes/excludedAttributes: {err.detail}", "invalidPath") from e
    for name, paths in (
        ("attributes", params.attributes),
        ("excludedAttributes", params.excluded_attributes),
    ):
        for path in paths or []:
            if not _names_attribute(model, str(path)):
                rt = model.__name__.split("[")[0]
                raise ScimError(400, f"{name}: {str(path)!r} is no attribute of a {rt}", "invalidPath")
    return params


def _names_attribute(model: type[Resource[Any]], text: str) -> bool:
    """Whether ``text`` names an attribute of ``model`` (or one of its schemas)."""
    from scim2_models import Path

    try:
        path = Path[model](text)  # type: ignore[valid-type]
        return path.resolve() is not None or path.model is not None
    except Exception:  # a path that does not parse names nothing
        return False


def response_parameters(request: Request, model: type[Resource[Any]]) -> ResponseParameters[Any] | None:
    """The ``attributes``/``excludedAttributes`` of a request's query string for ``model``."""
    q = request.query_params
    return parameters(q.get("attributes"), q.get("excludedAttributes"), model)


def search(request: Request, store: Store, rts: list[str], params: dict[str, Any], page: int) -> Response:
    """The ListResponse of the resources of types ``rts`` that the query ``params`` (query string
    or SearchRequest) selects, in pages of at most ``page``. Over several resource types (a search
    at the root) a name only one type knows is no error: ``attributes``/``excludedAttributes``
    that do not apply to a type leave its resources with their default attributes, and a filter
    attribute a type lacks matches none of its resources. Without a filter only the page is read;
    ``userName eq`` and ``id eq`` (what Entra ID and Okta ask before every change) are indexed
    lookups; any other filter reads the type's resources and matches each."""
    from scim2_models import Context, ListResponse

    start = max(int_param(params.get("startIndex"), "startIndex", 1), 1)
    count = min(max(int_param(params.get("count"), "count", page), 0), page)
    text = params.get("filter")
    if text is not None and not isinstance(text, str):
        raise ScimError(400, "filter must be a string", "invalidFilter")
    selected: dict[str, ResponseParameters[Any] | None] = {}
    refused: list[ScimError] = []
    for rt in rts:
        try:
            selected[rt] = parameters(params.get("attributes"), params.get("excludedAttributes"), model(rt))
        except ScimError as e:
            refused.append(e)
            selected[rt] = None  # names attributes of another resource type only
    if len(refused) == len(rts):  # an attribute no resource type here has
        raise refused[0]
    if text:
        found = [(rt, r) for rt in rts for r in _filtered(request, store, rt, text, strict=len(rts) == 1)]
        total, items = len(found), found[start - 1 : start - 1 + count]
    else:
        total, items = _page(request, store, rts, start - 1, count)
    body: dict[str, Any] = {
        "schemas": [str(ListResponse.__schema__)],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(items),
    }
    if items:
        body["Resources"] = [
            r.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=selected[rt])
            for rt, r in items
        ]
    return json_answer(body)


def _page(
    request: Request, store: Store, rts: list[str], skip: int, count: int
) -> tuple[int, list[tuple[str, Resource[Any]]]]:
    """The total of the resources of types ``rts`` and the ``count`` after the first ``skip``
    (the types one after the other, each in creation order); reads only that page."""
    counts = [store.scim_count(rt) for rt in rts]
    items: list[tuple[str, Resource[Any]]] = []
    for rt, n in zip(rts, counts, strict=True):
        if len(items) >= count:
            break
        if skip >= n:
            skip -= n
            continue
        rows = store.scim_resources(rt, offset=skip, limit=count - len(items))
        items += [(rt, as_model(request, rt, r)) for r in rows]
        skip = 0
    return sum(counts), items


def _filtered(request: Request, store: Store, rt: str, text: str, *, strict: bool) -> list[Resource[Any]]:
    """The resources of type ``rt`` that the filter ``text`` matches (400 ``invalidFilter`` for a
    filter that does not parse or names an attribute ``rt`` lacks, when ``strict``)."""
    from scim2_models import ScimFilter

    rt_model = model(rt)
    try:
        flt = ScimFilter[rt_model](text)  # type: ignore[valid-type]
        resources = [as_model(request, rt, r) for r in _candidates(flt.ast, rt, store)]
        return [r for r in resources if flt.match(r, strict=strict)]
    except ScimError:
        raise
    except Exception as e:
        err = from_exception(e)
        raise ScimError(400, f"filter {text!r}: {err.detail}", "invalidFilter") from e


def _folded(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _candidates(ast: FilterNode, rt: str, store: Store) -> list[ScimResource]:
    """A superset of the resources of type ``rt`` a filter ``attr eq "text"`` matches (Entra ID
    and Okta look users up this way before every change); the filter itself then decides. ``id``
    and a User's ``userName`` (kept folded in an indexed column, see ``resources.name_key``) are
    looked up; for another attribute, the resources whose document contains the text."""
    from scim2_models.path.expressions import Comparison

    if not isinstance(ast, Comparison) or ast.op.value != "eq" or not isinstance(ast.value, str):
        return store.scim_resources(rt)
    attr = ast.attr_path.attr.lower()
    if attr == "id" and not ast.attr_path.uri:
        found = store.scim_resource(rt, ast.value)
        return [found] if found is not None else []
    if attr == "username" and rt == "User" and not ast.attr_path.sub_attr:
        named = (store.scim_resource(rt, id) for id in store.scim_ids_named(rt, fold(ast.value)))
        return [r for r in named if r is not None]
    resources = store.scim_resources(rt)
    if attr == "meta" or ast.attr_path.uri:
        return resources
    needle = _folded(json.dumps(ast.value, ensure_ascii=False)[1:-1])
    return [r for r in resources if needle in _folded(json.dumps(r.document, ensure_ascii=False))]


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
