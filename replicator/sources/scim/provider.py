"""The SCIM endpoints of one daemon: the access check (SCIM enabled and the bearer token of
identity.scim.token), one request's handling (its errors as SCIM error answers, under the policy
of what the provider tolerates) and the resources' endpoints: list, search, get, create, replace,
patch and delete."""

from __future__ import annotations

import asyncio
import hmac
import importlib
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.responses import Response

from replicator.core.config import ScimConfig
from replicator.sources.bodies import BodyError, parse_json, read_limited
from replicator.sources.scim import dialects, query, writes
from replicator.sources.scim.errors import ScimError, error_answer, from_exception, json_answer
from replicator.sources.scim.resources import as_model, find, model, resource_type, state_store
from replicator.threads import blocking

if TYPE_CHECKING:
    from scim2_models import Context, Resource, ScimPolicy
    from starlette.requests import Request

    from replicator.sources.host import SourceHost
    from state import Store
    from state.store import ScimResource

log = structlog.get_logger("replicator.scim")

Endpoint = Callable[["Request"], Awaitable[Response]]


class Provider:
    """The SCIM resources' endpoints of one daemon, and the handling every SCIM request gets."""

    def __init__(self, host: SourceHost) -> None:
        self.host = host
        self.writes = asyncio.Lock()
        """One write at a time on this replica (its read, change and write of a resource)."""

    # --- request handling ------------------------------------------------------------------

    def check_access(self, request: Request) -> None:
        """404 while SCIM is not enabled, 503 when the token cannot be read, 401 unless the
        request sends it as its bearer token."""
        v = self.host.validated
        scim = v.config.identity.scim if v is not None else None
        if scim is None or not scim.enabled or scim.token is None:
            raise ScimError(404, "the SCIM service provider is not enabled (identity.scim.enabled)")
        header = request.headers.get("authorization", "")
        sent = header[7:].strip() if header.lower().startswith("bearer ") else ""
        try:
            expected = scim.token.resolve()
        except Exception as e:  # a missing env variable or file: the operator's problem, not the client's
            log.error("cannot resolve identity.scim.token", error=type(e).__name__)
            raise ScimError(503, "the SCIM token is not available on the server") from e
        if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise ScimError(401, "missing or wrong bearer token")

    def handler(self, fn: Endpoint) -> Endpoint:
        """``fn`` behind the access check, its errors as SCIM error answers: a store error is a
        503, anything unexpected a 500 (logged with its traceback, never sent to the client)."""

        async def run(request: Request) -> Response:
            if "scim2_models" not in sys.modules:  # its first import takes most of a second
                await blocking(importlib.import_module, "scim2_models")
            from scim2_models import SCIMException

            from state import StoreError

            try:
                self.check_access(request)
                with _policy():
                    return await fn(request)
            except ScimError as e:
                # a 401 names the scheme the client must authenticate with
                challenge = {"WWW-Authenticate": 'Bearer realm="scim"'} if e.status == 401 else None
                return error_answer(e, challenge)
            except SCIMException as e:
                return error_answer(from_exception(e))
            except StoreError as e:
                log.error("scim request failed: state store error", path=request.url.path, error=str(e))
                return error_answer(ScimError(503, "the state store is unavailable; retry later"))
            except Exception as e:  # a bug: a SCIM 500 without a traceback to the client
                log.exception("scim request failed", path=request.url.path, error=type(e).__name__)
                return error_answer(
                    ScimError(500, f"internal error ({type(e).__name__}); see the daemon log")
                )

        return run

    @property
    def store(self) -> Store:
        return state_store(self.host)

    async def _body(self, request: Request) -> bytes:
        """The request's body, at most ``identity.scim.maxRequestBytes`` (413 past it, read no
        further)."""
        v = self.host.validated
        limit = v.config.identity.scim.max_request_bytes if v is not None else ScimConfig().max_request_bytes
        try:
            return await read_limited(request, limit)
        except BodyError as e:
            raise ScimError(e.status, e.message) from e

    # --- endpoints -------------------------------------------------------------------------
    # Each endpoint reads the request's body on the event loop and does the rest (the store, the
    # validation of the inventory a write produces, the models) in a worker thread. Writes take
    # turns on this replica (``self.writes``), as they did when they ran on the loop.

    async def list_resources(self, request: Request) -> Response:
        q = request.query_params
        params = {
            k: q[k] for k in ("filter", "startIndex", "count", "attributes", "excludedAttributes") if k in q
        }
        return await blocking(self._search, request, [resource_type(request)], params)

    async def search(self, request: Request) -> Response:
        """POST .../.search: the query in a SearchRequest body; at the root it covers Users and
        Groups."""
        from scim2_models import SearchRequest

        body = _parse(await self._body(request))
        try:
            SearchRequest.model_validate(body)
        except Exception as e:
            raise from_exception(e) from e
        path = request.url.path.rstrip("/").split("/")
        rts = ["User", "Group"] if path[-2] == "v2" else [resource_type(request)]
        return await blocking(self._search, request, rts, body)

    def _search(self, request: Request, rts: list[str], params: dict[str, Any]) -> Response:
        return query.search(request, self.store, rts, params, query.max_page_size(self.host))

    async def get_resource(self, request: Request) -> Response:
        return await blocking(self._get, request)

    def _get(self, request: Request) -> Response:
        from scim2_models import Context

        rt = resource_type(request)
        stored = find(self.store, rt, request.path_params["id"])
        obj = as_model(request, rt, stored)
        unchanged = query.not_modified(request, stored)
        if unchanged is not None:
            return unchanged
        return _answer(request, obj, 200, Context.RESOURCE_QUERY_RESPONSE)

    async def create(self, request: Request) -> Response:
        raw = await self._body(request)
        async with self.writes:
            return await blocking(self._create, request, raw)

    def _create(self, request: Request, raw: bytes) -> Response:
        from scim2_models import Context

        rt = resource_type(request)
        body = _parse(raw)
        try:
            obj = model(rt).model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
        except Exception as e:
            raise from_exception(e) from e
        id = uuid.uuid4().hex
        writes.put(self.host, self.store, rt, id, obj)
        stored = find(self.store, rt, id)
        log.info("scim resource created", resource_type=rt, id=id)
        return _answer(request, as_model(request, rt, stored), 201, Context.RESOURCE_CREATION_RESPONSE)

    async def replace(self, request: Request) -> Response:
        raw = await self._body(request)
        async with self.writes:
            return await blocking(self._replace, request, raw)

    def _replace(self, request: Request, raw: bytes) -> Response:
        from scim2_models import Context

        with self.store.objects_lock():  # read, check If-Match and write as one step
            rt, id, stored, body = self._target(request, raw)
            try:
                obj = model(rt).model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
                obj.replace(as_model(request, rt, stored))
            except Exception as e:
                raise from_exception(e) from e
            obj.id = None
            writes.put(self.host, self.store, rt, id, obj, locked=True)
        log.info("scim resource replaced", resource_type=rt, id=id)
        return _answer(
            request,
            as_model(request, rt, find(self.store, rt, id)),
            200,
            Context.RESOURCE_REPLACEMENT_RESPONSE,
        )

    async def patch(self, request: Request) -> Response:
        raw = await self._body(request)
        async with self.writes:
            return await blocking(self._patch, request, raw)

    def _patch(self, request: Request, raw: bytes) -> Response:
        from scim2_models import Context, PatchOp

        with self.store.objects_lock():  # read, check If-Match and write as one step
            rt, id, stored, body = self._target(request, raw)
            obj = as_model(request, rt, stored)
            try:
                op = PatchOp[model(rt)].model_validate(  # type: ignore[misc]
                    dialects.rfc_patch(body), scim_ctx=Context.RESOURCE_PATCH_REQUEST
                )
                changed = op.patch(obj)
            except Exception as e:
                raise from_exception(e) from e
            if changed:
                obj.id, obj.meta = None, None
                writes.put(self.host, self.store, rt, id, obj, locked=True)
        if changed:
            log.info("scim resource patched", resource_type=rt, id=id)
        # 200 with the resource (Entra and Okta accept it; 204 is also allowed).
        return _answer(
            request, as_model(request, rt, find(self.store, rt, id)), 200, Context.RESOURCE_PATCH_RESPONSE
        )

    async def delete(self, request: Request) -> Response:
        async with self.writes:
            return await blocking(self._delete, request)

    def _delete(self, request: Request) -> Response:
        rt = resource_type(request)
        id = request.path_params["id"]
        with self.store.objects_lock():  # read, check If-Match and write as one step
            query.if_match(request, find(self.store, rt, id))
            writes.delete(self.host, self.store, rt, id)
        log.info("scim resource deleted", resource_type=rt, id=id)
        return Response(status_code=204)

    def _target(self, request: Request, raw: bytes) -> tuple[str, str, ScimResource, dict[str, Any]]:
        """What a replace or a patch works on: the resource type, the id, the stored resource
        (404 when there is none, 412 when If-Match names another version) and the body."""
        rt = resource_type(request)
        id = request.path_params["id"]
        stored = find(self.store, rt, id)
        query.if_match(request, stored)
        return rt, id, stored, _parse(raw)


async def not_found(request: Request) -> Response:
    raise ScimError(404, f"no SCIM endpoint at {request.url.path}")


async def not_allowed(request: Request) -> Response:
    raise ScimError(405, f"{request.method} is not supported on {request.url.path}")


def _policy() -> ScimPolicy:
    """What the provider tolerates: Entra ID's PATCH quirks (a ``remove`` whose ``value`` selects
    the members to remove; a ``replace`` of ``emails[type eq "work"].value`` that matches no entry
    creates it) and unknown attributes (ignored, as the provisioning clients send the attributes
    they are mapped to send)."""
    from scim2_models import ScimPolicy

    return ScimPolicy(
        unknown=ScimPolicy.Unknown.ignore,
        remove_value_as_filter=ScimPolicy.RemoveValue.apply,
        unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
    )


def _parse(raw: bytes) -> dict[str, Any]:
    """A request's body: a JSON object, nested at most ``MAX_JSON_DEPTH`` levels (400
    ``invalidSyntax`` otherwise)."""
    try:
        body = parse_json(raw or b"null")
    except BodyError as e:
        raise ScimError(400, e.message, "invalidSyntax") from e
    if not isinstance(body, dict):
        raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
    return body


def _answer(request: Request, obj: Resource[Any], status: int, ctx: Context) -> Response:
    """``obj`` as the answer, with the attributes the request's query string selects, its
    version as the ETag and, for a 201, its URL as the Location."""
    from scim2_models import ResponseParameters

    headers = {"ETag": obj.meta.version} if obj.meta and obj.meta.version else {}
    if status == 201 and obj.meta and obj.meta.location:
        headers["Location"] = str(obj.meta.location)
    params = query.response_parameters(request, type(obj))
    if params is None:
        params = ResponseParameters()
    return json_answer(obj.model_dump(scim_ctx=ctx, response_parameters=params), status, headers)
