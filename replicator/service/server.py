"""The daemon's HTTP surface: health, readiness, metrics, status, triggers, the OpenAPI document,
and the routes of the identity sources and the meshObject API."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from replicator.logs import get_logger
from replicator.service.workqueue import Added
from replicator.sources import apiauth
from replicator.threads import blocking

if TYPE_CHECKING:
    from replicator.service.daemon import Daemon

log = get_logger("replicator.service.daemon")

STALL_SECONDS = 120.0
"""/healthz fails when the daemon's loop has not ticked for this long."""


def build_app(daemon: Daemon) -> Starlette:
    async def authorize(request: Request, scope: str) -> Response | None:
        caller = await apiauth.authorize(request, scope, daemon.identify)
        return caller if isinstance(caller, Response) else None

    def unknown_parameters(request: Request, known: set[str]) -> Response | None:
        """400 naming the query parameters the endpoint does not take (a typo is not ignored)."""
        unknown = sorted(set(request.query_params) - known)
        if not unknown:
            return None
        expected = ", ".join(sorted(known)) or "none"
        return JSONResponse(
            {"error": f"unknown query parameter(s) {', '.join(map(repr, unknown))} (known: {expected})"},
            status_code=400,
        )

    async def healthz(_: Request) -> Response:
        stalled = time.monotonic() - daemon.alive_at > max(STALL_SECONDS, 3 * daemon.watch_interval)
        if stalled or daemon.stopping.is_set():
            return PlainTextResponse("stalled\n" if stalled else "stopping\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        why = await blocking(daemon.ready)
        return (
            PlainTextResponse(f"not ready: {why}\n", status_code=503) if why else PlainTextResponse("ready\n")
        )

    async def metrics(_: Request) -> Response:
        return Response(daemon.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def status(request: Request) -> Response:
        return await authorize(request, "read") or JSONResponse(await daemon.status())

    async def trigger(request: Request) -> Response:
        denied = await authorize(request, "write") or unknown_parameters(request, {"force"})
        if denied is not None:
            return denied
        p = request.path_params
        key = f"{p['workspace']}/{p['project']}/{p['platform']}"
        raw = request.query_params.get("force", "false").lower()
        if raw not in ("1", "true", "yes", "0", "false", "no"):
            return JSONResponse({"error": f"force: {raw!r} is not true or false"}, status_code=400)
        force = raw in ("1", "true", "yes")
        added = daemon.request(key, force=force)
        if added is None:
            return JSONResponse({"error": f"unknown tenant {key!r}"}, status_code=404)
        body: dict[str, object] = {"tenant": key, "queued": True}
        if added is not Added.QUEUED:  # merged: waiting already, running (once more after), in backoff
            body["mergedInto"] = added.value
        return JSONResponse(body, status_code=202)

    async def resync(request: Request) -> Response:
        denied = await authorize(request, "write") or unknown_parameters(request, {"platform"})
        if denied is not None:
            return denied
        platform = request.query_params.get("platform")
        if platform == "":
            return JSONResponse(
                {"error": "platform: give a platform identifier, or leave it out"}, status_code=400
            )
        v = daemon.validated
        if platform is not None and (v is None or v.config.platform(platform) is None):
            return JSONResponse({"error": f"unknown platform {platform!r}"}, status_code=404)
        added = await daemon.resync(platform)
        queued = added[Added.QUEUED]
        log.info("full resync requested", platform=platform, queued=queued, merged=added.total() - queued)
        body = {
            "queued": queued,
            "mergedInto": {k.value: n for k, n in sorted(added.items()) if k is not Added.QUEUED},
        }
        return JSONResponse({"platform": platform, "tenants": added.total(), **body}, status_code=202)

    async def openapi(_: Request) -> Response:
        from replicator.service.openapi import openapi_document

        return JSONResponse(openapi_document())

    from replicator.sources import objects_api, oidc, saml, scim

    return Starlette(
        routes=[
            *objects_api.routes(daemon),
            *oidc.routes(daemon),
            *saml.routes(daemon),
            *scim.routes(daemon),
            Route("/api/openapi.json", openapi, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/v1/status", status),
            Route("/v1/reconcile", resync, methods=["POST"]),
            Route("/v1/tenants/{workspace}/{project}/{platform}/reconcile", trigger, methods=["POST"]),
        ],
        # A path no route matches (an encoded "/" splits a segment in two) or a method a route
        # does not take: a JSON error like every other answer, not Starlette's plain text.
        exception_handlers={HTTPException: http_error},
    )


async def http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
