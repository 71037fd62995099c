"""Fixtures for tests against a real moto server over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.moto_aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoAws


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoAws]:
    """One moto server for the whole session (state is shared: prefer ``moto``)."""
    with MotoAws() as server:
        yield server


@pytest.fixture
def moto(moto_server: MotoAws, monkeypatch: pytest.MonkeyPatch) -> MotoAws:
    """The session's moto server, reset, with dummy credentials in the AWS credential chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    moto_server.reset()
    return moto_server
