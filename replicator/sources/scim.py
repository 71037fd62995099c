"""Placeholder: filled by the scim work of issue 8."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from replicator.daemon import Daemon


def routes(daemon: Daemon) -> list[BaseRoute]:
    return []
