"""What the log redaction masks, and what it leaves readable."""

from __future__ import annotations

import sys

import pytest

from replicator.logs import redact


def test_secrets_are_masked_and_a_fencing_token_is_not() -> None:
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "api_key": "k-123",
            "client_secret": "s-456",
            "token": "t-789",
            "url": "postgresql://user:pw@db/x",
            "lease_token": 42,
        },
    )
    assert event["api_key"] == event["client_secret"] == event["token"] == "***"
    assert event["url"] == "postgresql://user:***@db/x"
    assert event["lease_token"] == 42, "a counter, not a credential: operators need it"


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty, self.written = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.written += text
        return len(text)

    def flush(self) -> None:
        pass


def test_auto_format_follows_stderr_where_the_lines_go(monkeypatch: pytest.MonkeyPatch) -> None:
    import structlog

    from replicator import logs

    for stderr_tty, stdout_tty, expect_json in ((True, False, False), (False, True, True)):
        err, out = _Stream(stderr_tty), _Stream(stdout_tty)
        monkeypatch.setattr(sys, "stderr", err)
        monkeypatch.setattr(sys, "stdout", out)
        logs.configure("auto", "info")
        try:
            structlog.get_logger("t").info("hello", n=1)
        finally:
            structlog.reset_defaults()
        assert out.written == "", "log lines go to stderr only"
        assert err.written.lstrip().startswith("{") is expect_json, err.written
