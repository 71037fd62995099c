"""SCIM 2.0 service provider at ``/scim/v2``, so that Entra ID or Okta provisioning pushes users
and groups.

A SCIM User is a meshUser of source ``scim`` named by its SCIM ``id``; a SCIM Group is a
meshUserGroup named by its ``id`` (``mapping``). The whole SCIM resource (also the attributes a
meshUser cannot hold) is kept in the store's ``scim_resources`` table, so a client reads back what
it wrote (``resources``). Every write is validated against the whole inventory
(``replicator.sources.stored.apply``) before anything is written (``writes``). ``active: false``
and DELETE deprovision the meshUser (kept for the bindings that name it, out of the inventory).
``provider`` holds the access check, the handling of a request and the resources' endpoints;
``query`` the list and search queries, the attributes an answer carries and the ETag
preconditions; ``discovery`` the ServiceProviderConfig, Schemas and ResourceTypes endpoints;
``errors`` the SCIM error answers. docs/scim.md describes it for users."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

from replicator.sources.scim import discovery
from replicator.sources.scim.provider import Provider, not_allowed, not_found
from replicator.sources.scim.resources import PREFIX

if TYPE_CHECKING:
    from replicator.sources.host import SourceHost

__all__ = ["routes"]


def routes(host: SourceHost) -> list[BaseRoute]:
    """The routes of ``/scim/v2``, every one behind the access check. A method an endpoint does
    not support is a 405 and a path that is no endpoint a 404, both as SCIM errors."""
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
    found = discovery.endpoints(host)
    out += [Route(f"{PREFIX}/{path}", h(fn), methods=["GET"]) for path, fn in found]
    out += [Route(f"{PREFIX}/{path}", h(not_allowed), methods=everything[1:]) for path, _ in found]
    out.append(Route(f"{PREFIX}/{{rest:path}}", h(not_found), methods=everything))
    return out
