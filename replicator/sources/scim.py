"""SCIM 2.0 service provider (RFC 7643/7644) at ``/scim/v2``, so that Entra ID or Okta
provisioning pushes users and groups.

A SCIM User is a meshUser of source ``scim`` named by its SCIM ``id``; a SCIM Group is a
meshUserGroup named by its ``id``. The whole SCIM resource (also the attributes a meshUser cannot
hold) is kept in the store's ``scim_resources`` table, so a client reads back what it wrote. Every
write is validated against the whole inventory (``replicator.sources.stored.apply``) before anything is
written. ``active: false`` and DELETE deprovision the meshUser (kept for the bindings that name it,
out of the inventory). docs/scim.md describes it for users."""

from __future__ import annotations

import hmac
import json
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from scim2_models import Resource, ScimPolicy

    from replicator.sources.host import SourceHost
    from state import Store
    from state.store import ScimResource

log = structlog.get_logger("replicator.scim")

PREFIX = "/scim/v2"
SOURCE = "scim"
MEDIA_TYPE = "application/scim+json"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


class ScimError(Exception):
    """An answer in the SCIM error schema (RFC 7644 section 3.12)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _error(e: ScimError) -> Response:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(e.status),
        "detail": e.detail,
    }
    if e.scim_type:
        body["scimType"] = e.scim_type
    return _json(body, e.status)


def _models() -> tuple[type[Resource[Any]], type[Resource[Any]]]:
    from scim2_models import EnterpriseUser, Group, User

    return User[EnterpriseUser], Group


def _model(rt: str) -> type[Resource[Any]]:
    """The model of resource type ``rt`` ("User" or "Group")."""
    user, group = _models()
    return user if rt == "User" else group


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


def _from_exception(e: Exception) -> ScimError:
    """A scim2-models or pydantic error as a ScimError (400 with its scimType)."""
    from pydantic import ValidationError
    from scim2_models import Error, SCIMException

    if isinstance(e, SCIMException):
        err = e.to_error()
        return ScimError(err.status or 400, err.detail or str(e), err.scim_type)
    if isinstance(e, ValidationError):
        errors = Error.from_validation_errors(e)
        first = errors[0] if errors else Error(status=400, detail=str(e))
        detail = "; ".join(x.detail or "" for x in errors) or str(e)
        return ScimError(first.status or 400, detail, first.scim_type or "invalidValue")
    return ScimError(400, str(e), "invalidValue")


class Provider:
    """The SCIM endpoints of one daemon."""

    def __init__(self, host: SourceHost) -> None:
        self.host = host

    # --- request plumbing ------------------------------------------------------------------

    def _check_access(self, request: Request) -> None:
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

    def handler(
        self, fn: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            from scim2_models import SCIMException

            from state import StoreError

            try:
                self._check_access(request)
                with _policy():
                    return await fn(request)
            except ScimError as e:
                if e.status == 401:
                    return Response(
                        _error(e).body,
                        status_code=401,
                        media_type=MEDIA_TYPE,
                        headers={"WWW-Authenticate": 'Bearer realm="scim"'},
                    )
                return _error(e)
            except SCIMException as e:
                return _error(_from_exception(e))
            except StoreError as e:
                log.error("scim request failed: state store error", path=request.url.path, error=str(e))
                return _error(ScimError(503, "the state store is unavailable; retry later"))
            except Exception as e:  # a bug: a SCIM 500 without a traceback to the client
                log.exception("scim request failed", path=request.url.path, error=type(e).__name__)
                return _error(ScimError(500, f"internal error ({type(e).__name__}); see the daemon log"))

        return run

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise ScimError(400, f"the body is not JSON: {e}", "invalidSyntax") from e
        if not isinstance(body, dict):
            raise ScimError(400, "the body must be a JSON object", "invalidSyntax")
        return body

    @staticmethod
    def _base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{PREFIX}"

    @property
    def _store(self) -> Store:
        if self.host.store is None:
            raise ScimError(503, "the state store is not open yet")
        return self.host.store

    # --- resources -------------------------------------------------------------------------

    def _resource(self, request: Request, rt: str, stored: ScimResource) -> Resource[Any]:
        """A stored resource as its model, with ``id`` and ``meta``."""
        from scim2_models import Meta

        model = _model(rt)
        obj = model.model_validate(dict(stored.document))
        obj.id = stored.id
        endpoint = "Users" if rt == "User" else "Groups"
        obj.meta = Meta(
            resource_type=rt,
            created=stored.created_at,
            last_modified=stored.updated_at,
            location=f"{self._base(request)}/{endpoint}/{stored.id}",
            version=_etag(stored.revision),
        )
        return obj

    def _get(self, rt: str, id: str) -> ScimResource:
        stored = self._store.scim_resource(rt, id)
        if stored is None:
            raise ScimError(404, f"{rt} {id} not found")
        return stored

    def _dump(self, obj: Resource[Any], request: Request, ctx: Any) -> dict[str, Any]:
        from scim2_models import ResponseParameters

        params = _response_parameters(request, type(obj))
        if params is None:
            params = ResponseParameters()
        return obj.model_dump(scim_ctx=ctx, response_parameters=params)

    def _answer(self, request: Request, obj: Resource[Any], status: int, ctx: Any) -> Response:
        headers = {"ETag": obj.meta.version} if obj.meta and obj.meta.version else {}
        if status == 201 and obj.meta and obj.meta.location:
            headers["Location"] = str(obj.meta.location)
        return _json(self._dump(obj, request, ctx), status, headers)

    # --- mapping ---------------------------------------------------------------------------

    def _mesh_user(self, id: str, user: Any) -> Any:
        from replicator.core.inventory import MeshUser

        v = self.host.validated
        attribute = v.config.identity.scim.euid_attribute if v is not None else "userName"
        emails = list(user.emails or [])
        primary = next((e for e in emails if e.primary), emails[0] if emails else None)
        name = user.name
        return MeshUser.model_validate(
            {
                "kind": "meshUser",
                "metadata": {"name": id},
                "spec": _without_none(
                    {
                        "username": user.user_name,
                        "email": primary.value if primary is not None else None,
                        "euid": _euid(user, attribute),
                        "givenName": name.given_name if name is not None else None,
                        "familyName": name.family_name if name is not None else None,
                    }
                ),
            }
        )

    def _mesh_group(self, id: str, group: Any, users: set[str]) -> Any:
        from replicator.core.inventory import MeshUserGroup

        members = []
        for m in group.members or []:
            if m.value in users and m.value not in members:
                members.append(m.value)
        return MeshUserGroup.model_validate(
            {
                "kind": "meshUserGroup",
                "metadata": {"name": id},
                "spec": _without_none({"members": members, "displayName": group.display_name}),
            }
        )

    def _check_members(self, group: Any) -> set[str]:
        """The ids of the SCIM users (400 for a member that is no User or Group here)."""
        users = {r.id for r in self._store.scim_resources("User")}
        groups = {r.id for r in self._store.scim_resources("Group")}
        for m in group.members or []:
            if m.value not in users and m.value not in groups:
                raise ScimError(
                    400, f"members: {m.value!r} is no User or Group of this service", "invalidValue"
                )
        return users

    def _unique_user_name(self, user: Any, id: str | None) -> None:
        wanted = (user.user_name or "").casefold()
        for other in self._store.scim_resources("User"):
            if other.id != id and str(other.document.get("userName", "")).casefold() == wanted:
                raise ScimError(
                    409, f"userName {user.user_name!r} is already used by User {other.id}", "uniqueness"
                )

    def _write(self, change: Any, *, locked: bool = False) -> None:
        """Validate the inventory ``change`` produces, then write it (SCIM errors otherwise).
        ``locked``: the caller holds the store's objects lock."""
        from replicator.inputs.loader import InputError
        from replicator.sources import stored
        from state import ObjectOwnedError

        if self.host.validated is None:
            raise ScimError(503, "the configuration is not loaded")
        try:
            write = stored.apply_locked if locked else stored.apply
            write(self.host.config_path, self._store, change)
        except InputError as e:
            detail = "; ".join(str(p) for p in e.problems[:10])
            unique = any("must be unique" in p.message for p in e.problems)
            log.warning("scim change refused", problems=[str(p) for p in e.problems[:10]])
            raise ScimError(409 if unique else 400, detail, "uniqueness" if unique else "invalidValue") from e
        except ObjectOwnedError as e:
            raise ScimError(409, str(e), "uniqueness") from e

    def _save(self, rt: str, id: str, obj: Any) -> ScimResource:
        document = obj.model_dump(scim_ctx=None, mode="json", by_alias=True, exclude_none=True)
        for key in ("id", "meta", "password"):
            document.pop(key, None)
        return self._store.put_scim_resources([(rt, id, document)])[(rt, id)]

    def _user_change(self, id: str, user: Any) -> Any:
        from replicator.sources.stored import Change, as_loaded

        mesh = self._mesh_user(id, user)
        change = Change(SOURCE, puts=as_loaded([mesh], f"SCIM User {id}"))
        if user.external_id:
            change.external_ids[("meshUser", id)] = user.external_id
        if user.active is False:
            change.deprovisions.add(("meshUser", id))
        return change

    def _if_match(self, request: Request, stored: ScimResource) -> None:
        wanted = request.headers.get("if-match")
        if wanted is None:
            return
        tags = {t.strip() for t in wanted.split(",")}
        current = _etag(stored.revision)
        if "*" not in tags and current not in tags and current.removeprefix("W/") not in tags:
            raise ScimError(412, f"If-Match {wanted} does not match the current version {current}")

    # --- endpoints -------------------------------------------------------------------------

    async def list_resources(self, request: Request) -> Response:
        q = request.query_params
        params = {
            k: q[k] for k in ("filter", "startIndex", "count", "attributes", "excludedAttributes") if k in q
        }
        return self._search(request, [_resource_type(request)], params)

    async def search(self, request: Request) -> Response:
        """POST .../.search (RFC 7644 3.4.3): the query in a SearchRequest body; at the root it
        covers Users and Groups."""
        from scim2_models import SearchRequest

        body = await self._body(request)
        try:
            SearchRequest.model_validate(body)
        except Exception as e:
            raise _from_exception(e) from e
        path = request.url.path.rstrip("/").split("/")
        rts = ["User", "Group"] if path[-2] == "v2" else [_resource_type(request)]
        return self._search(request, rts, body)

    def _search(self, request: Request, rts: list[str], params: dict[str, Any]) -> Response:
        from scim2_models import Context, ListResponse, ScimFilter

        start = max(_int_param(params.get("startIndex"), "startIndex", 1), 1)
        v = self.host.validated
        page = v.config.identity.scim.max_page_size if v is not None else 500
        count = min(max(_int_param(params.get("count"), "count", page), 0), page)
        text = params.get("filter")
        if text is not None and not isinstance(text, str):
            raise ScimError(400, "filter must be a string", "invalidFilter")
        found: list[Any] = []
        parameters: dict[str, Any] = {}
        for rt in rts:
            model = _model(rt)
            try:
                parameters[rt] = _parameters(
                    params.get("attributes"), params.get("excludedAttributes"), model
                )
            except ScimError:
                if len(rts) == 1:
                    raise
                parameters[rt] = None  # names attributes of the other resource type only
            stored = self._store.scim_resources(rt)
            if text:
                try:
                    flt = ScimFilter[model](text)  # type: ignore[valid-type]
                    stored = _candidates(flt.ast, stored)
                    resources = [self._resource(request, rt, r) for r in stored]
                    resources = [r for r in resources if flt.match(r, strict=len(rts) == 1)]
                except ScimError:
                    raise
                except Exception as e:
                    err = _from_exception(e)
                    raise ScimError(400, f"filter {text!r}: {err.detail}", "invalidFilter") from e
            else:
                resources = [self._resource(request, rt, r) for r in stored]
            found += [(rt, r) for r in resources]
        items = found[start - 1 : start - 1 + count]
        body = {
            "schemas": [str(ListResponse.__schema__)],
            "totalResults": len(found),
            "startIndex": start,
            "itemsPerPage": len(items),
        }
        if items:
            body["Resources"] = [
                r.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=parameters[rt])
                for rt, r in items
            ]
        return _json(body)

    async def get_resource(self, request: Request) -> Response:
        from scim2_models import Context

        rt = _resource_type(request)
        stored = self._get(rt, request.path_params["id"])
        obj = self._resource(request, rt, stored)
        if request.headers.get("if-none-match") == _etag(stored.revision):
            return Response(status_code=304, headers={"ETag": _etag(stored.revision)})
        return self._answer(request, obj, 200, Context.RESOURCE_QUERY_RESPONSE)

    async def create(self, request: Request) -> Response:
        from scim2_models import Context

        rt = _resource_type(request)
        model = _model(rt)
        body = await self._body(request)
        try:
            obj = model.model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST)
        except Exception as e:
            raise _from_exception(e) from e
        id = uuid.uuid4().hex
        self._put(rt, id, obj)
        stored = self._get(rt, id)
        log.info("scim resource created", resource_type=rt, id=id)
        return self._answer(
            request, self._resource(request, rt, stored), 201, Context.RESOURCE_CREATION_RESPONSE
        )

    def _put(self, rt: str, id: str, obj: Any) -> ScimResource:
        """Validate and write the meshObject ``obj`` maps to, then keep the SCIM resource."""
        from replicator.sources.stored import Change, as_loaded

        # Under the objects lock from the uniqueness check to the SCIM resource's write: another
        # replica creating the same userName at the same moment waits, then sees this one.
        with self._store.objects_lock():
            if rt == "User":
                self._unique_user_name(obj, id)
                change = self._user_change(id, obj)
            else:
                users = self._check_members(obj)
                change = Change(
                    SOURCE, puts=as_loaded([self._mesh_group(id, obj, users)], f"SCIM Group {id}")
                )
                if obj.external_id:
                    change.external_ids[("meshUserGroup", id)] = obj.external_id
            self._write(change, locked=True)
            saved = self._save(rt, id, obj)
        self.host.objects_changed()
        return saved

    async def _target(self, request: Request) -> tuple[str, type[Resource[Any]], str, ScimResource, Any]:
        """What a replace or a patch works on: the resource type, its model, the id, the stored
        resource (404 when there is none, 412 when If-Match names another version) and the body."""
        rt = _resource_type(request)
        id = request.path_params["id"]
        stored = self._get(rt, id)
        self._if_match(request, stored)
        return rt, _model(rt), id, stored, await self._body(request)

    async def replace(self, request: Request) -> Response:
        from scim2_models import Context

        rt, model, id, stored, body = await self._target(request)
        try:
            obj = model.model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
            obj.replace(self._resource(request, rt, stored))
        except Exception as e:
            raise _from_exception(e) from e
        obj.id = None
        self._put(rt, id, obj)
        log.info("scim resource replaced", resource_type=rt, id=id)
        return self._answer(
            request,
            self._resource(request, rt, self._get(rt, id)),
            200,
            Context.RESOURCE_REPLACEMENT_RESPONSE,
        )

    async def patch(self, request: Request) -> Response:
        from scim2_models import Context, PatchOp

        rt, model, id, stored, body = await self._target(request)
        obj = self._resource(request, rt, stored)
        try:
            op = PatchOp[model].model_validate(body, scim_ctx=Context.RESOURCE_PATCH_REQUEST)  # type: ignore[valid-type]
            changed = op.patch(obj)
        except Exception as e:
            raise _from_exception(e) from e
        if changed:
            obj.id, obj.meta = None, None
            self._put(rt, id, obj)
            log.info("scim resource patched", resource_type=rt, id=id)
        # RFC 7644 3.5.2: 200 with the resource (Entra and Okta accept it; 204 is also allowed).
        return self._answer(
            request, self._resource(request, rt, self._get(rt, id)), 200, Context.RESOURCE_PATCH_RESPONSE
        )

    async def delete(self, request: Request) -> Response:
        from replicator.sources.stored import Change, as_loaded

        rt = _resource_type(request)
        id = request.path_params["id"]
        stored = self._get(rt, id)
        self._if_match(request, stored)
        _, group_model = _models()
        if rt == "User":
            # The user leaves the groups that hold it; its meshUser is deprovisioned (kept for the
            # bindings that name it, out of the inventory).
            users = {r.id for r in self._store.scim_resources("User")} - {id}
            groups = []
            for g in self._store.scim_resources("Group"):
                members: Any = g.document.get("members") or []
                if any(isinstance(m, dict) and m.get("value") == id for m in members):
                    group: Any = group_model.model_validate(dict(g.document))
                    group.members = [m for m in group.members or [] if m.value != id]
                    groups.append((g.id, group))
            change = Change(
                SOURCE,
                puts=as_loaded([self._mesh_group(gid, g, users) for gid, g in groups], "SCIM DELETE"),
                deprovisions={("meshUser", id)},
            )
            self._write(change)
            for gid, g in groups:
                self._save("Group", gid, g)
        else:
            self._write(Change(SOURCE, deletes={("meshUserGroup", id)}))
        self._store.put_scim_resources([], deletes=[(rt, id)])
        self.host.objects_changed()
        log.info("scim resource deleted", resource_type=rt, id=id)
        return Response(status_code=204)

    # --- discovery -------------------------------------------------------------------------

    async def service_provider_config(self, request: Request) -> Response:
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

        v = self.host.validated
        page = v.config.identity.scim.max_page_size if v is not None else 500
        spc = ServiceProviderConfig(
            documentation_uri=None,
            patch=Patch(supported=True),
            bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
            filter=Filter(supported=True, max_results=page),
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
                resource_type="ServiceProviderConfig", location=f"{self._base(request)}/ServiceProviderConfig"
            ),
        )
        return _json(spc.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))

    def _schemas(self, request: Request) -> list[Any]:
        from scim2_models import EnterpriseUser, Group, Meta, User

        out = []
        for model in (User, EnterpriseUser, Group):
            schema = model.to_schema()
            schema.meta = Meta(resource_type="Schema", location=f"{self._base(request)}/Schemas/{schema.id}")
            out.append(schema)
        return out

    def _resource_types(self, request: Request) -> list[Any]:
        from scim2_models import Meta, ResourceType

        out = []
        for model in _models():
            rt = ResourceType.from_resource(model)
            rt.meta = Meta(
                resource_type="ResourceType", location=f"{self._base(request)}/ResourceTypes/{rt.id}"
            )
            out.append(rt)
        return out

    async def schemas(self, request: Request) -> Response:
        return self._discovery_list(request, self._schemas(request))

    async def schema(self, request: Request) -> Response:
        return self._discovery_one(self._schemas(request), request.path_params["id"], "Schema")

    async def resource_types(self, request: Request) -> Response:
        return self._discovery_list(request, self._resource_types(request))

    async def resource_type(self, request: Request) -> Response:
        return self._discovery_one(self._resource_types(request), request.path_params["id"], "ResourceType")

    @staticmethod
    def _discovery_list(request: Request, items: list[Any]) -> Response:
        from scim2_models import Context, ListResponse

        if request.query_params.get("filter"):
            raise ScimError(403, "filtering discovery resources is not supported (RFC 7644 4)")
        list_model: Any = ListResponse[type(items[0])]  # type: ignore[misc]
        body = list_model(
            total_results=len(items), start_index=1, items_per_page=len(items), resources=items
        ).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        return _json(body)

    @staticmethod
    def _discovery_one(items: list[Any], id: str, what: str) -> Response:
        from scim2_models import Context

        for item in items:
            if item.id == id:
                return _json(item.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        raise ScimError(404, f"{what} {id} not found")

    async def not_found(self, request: Request) -> Response:
        raise ScimError(404, f"no SCIM endpoint at {request.url.path}")

    async def not_allowed(self, request: Request) -> Response:
        raise ScimError(405, f"{request.method} is not supported on {request.url.path}")


def _folded(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _candidates(ast: Any, stored: list[ScimResource]) -> list[ScimResource]:
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


def _etag(revision: int) -> str:
    return f'W/"{revision}"'


def _resource_type(request: Request) -> str:
    return "User" if request.url.path.rstrip("/").split("/")[3] == "Users" else "Group"


def _int_param(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ScimError(400, f"{name} must be an integer, not {value!r}", "invalidValue")
    try:
        return int(value)
    except ValueError as e:
        raise ScimError(400, f"{name} must be an integer, not {value!r}", "invalidValue") from e


def _response_parameters(request: Request, model: Any) -> Any:
    q = request.query_params
    return _parameters(q.get("attributes"), q.get("excludedAttributes"), model)


def _parameters(attributes: Any, excluded: Any, model: Any) -> Any:
    """``attributes``/``excludedAttributes`` (comma-separated or lists) for ``model``, or None."""
    from scim2_models import ResponseParameters

    if not attributes and not excluded:
        return None
    try:
        return ResponseParameters[model].model_validate(
            _without_none({"attributes": attributes or None, "excludedAttributes": excluded or None})
        )
    except Exception as e:
        err = _from_exception(e)
        raise ScimError(400, f"attributes/excludedAttributes: {err.detail}", "invalidPath") from e


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _euid(user: Any, attribute: str) -> str | None:
    """The SCIM attribute ``attribute`` of ``user`` (see ScimConfig.euid_attribute)."""
    if attribute == "userName":
        return user.user_name  # type: ignore[no-any-return]
    if attribute == "externalId":
        return user.external_id  # type: ignore[no-any-return]
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


def routes(host: SourceHost) -> list[BaseRoute]:
    p = Provider(host)
    h = p.handler
    out: list[BaseRoute] = []
    everything = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    # the query answers (list and search) come first: /Users/.search is no id
    out.append(Route(f"{PREFIX}/.search", h(p.search), methods=["POST"]))
    for endpoint in ("Users", "Groups"):
        out += [
            Route(f"{PREFIX}/{endpoint}/.search", h(p.search), methods=["POST"]),
            Route(f"{PREFIX}/{endpoint}", h(p.list_resources), methods=["GET"]),
            Route(f"{PREFIX}/{endpoint}", h(p.create), methods=["POST"]),
            Route(f"{PREFIX}/{endpoint}/{{id}}", h(p.get_resource), methods=["GET"]),
            Route(f"{PREFIX}/{endpoint}/{{id}}", h(p.replace), methods=["PUT"]),
            Route(f"{PREFIX}/{endpoint}/{{id}}", h(p.patch), methods=["PATCH"]),
            Route(f"{PREFIX}/{endpoint}/{{id}}", h(p.delete), methods=["DELETE"]),
        ]
    out += [
        Route(f"{PREFIX}/ServiceProviderConfig", h(p.service_provider_config), methods=["GET"]),
        Route(f"{PREFIX}/Schemas", h(p.schemas), methods=["GET"]),
        Route(f"{PREFIX}/Schemas/{{id:path}}", h(p.schema), methods=["GET"]),
        Route(f"{PREFIX}/ResourceTypes", h(p.resource_types), methods=["GET"]),
        Route(f"{PREFIX}/ResourceTypes/{{id}}", h(p.resource_type), methods=["GET"]),
    ]
    for endpoint in (
        "ServiceProviderConfig",
        "Schemas",
        "Schemas/{id:path}",
        "ResourceTypes",
        "ResourceTypes/{id}",
    ):
        out.append(Route(f"{PREFIX}/{endpoint}", h(p.not_allowed), methods=everything[1:]))
    out.append(Route(f"{PREFIX}/{{rest:path}}", h(p.not_found), methods=everything))
    return out
