"""Fixtures of the image and deployment tests (tests/unit/test_image.py, test_deploy.py): the
Dockerfile's stages, pyproject.toml, the daemon's GET routes."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from replicator.service.server import build_app
from tests.support.dockerfile import ROOT, Stage, read_stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return read_stages()


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def get_routes() -> set[str]:
    """Paths the daemon's ASGI app answers with GET (what probes and HEALTHCHECK may use)."""
    app = build_app(None)  # type: ignore[arg-type]  # handlers use the daemon only per request
    return {getattr(r, "path", "") for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}
