"""What the log redaction masks, and what it leaves readable."""

from __future__ import annotations

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
