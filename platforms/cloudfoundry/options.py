"""The ``cloudfoundry:`` block of a platform in the config file."""

from __future__ import annotations

import pydantic

from platforms.options import Options, SecretRef


class CloudFoundryOptions(Options):
    """The ``cloudfoundry:`` block of a platform in the config file."""

    api_url: str = pydantic.Field(min_length=1)
    """The Cloud Controller's URL, e.g. ``https://api.sys.example.com`` (any endpoint: a test
    server, a sovereign installation)."""
    uaa_url: str | None = None
    """UAA's URL for the token request (null: read from ``GET {apiUrl}/`` ``links.uaa``)."""
    client_id: str = pydantic.Field(min_length=1)
    """The UAA client the replicator acts as (client credentials grant; it needs
    ``cloud_controller.admin`` or the org manager role in the orgs it manages)."""
    client_secret: SecretRef
    """The client's secret: ``{env: NAME}`` or ``{file: PATH}``."""
    origin: str = pydantic.Field(default="uaa", min_length=1)
    """The user store users are looked up in: ``uaa`` or an identity provider's origin."""
    ensure_users: bool = True
    """A bound user ``GET /v3/users`` does not list (the Cloud Controller does not know them yet,
    e.g. an SSO user who never logged in, or the client may not see them) gets the space's org's
    ``organization_user`` role by ``username`` + ``origin``, which makes the Cloud Controller user
    (plan: ``+ ensure user``). False: such a user is ``USER_NOT_FOUND``."""
    org_guid: str | None = None
    """When set, a space (tenant) of another org is refused (a check, not needed otherwise)."""
    verify_tls: bool = True
    """Verify the servers' TLS certificates."""
    ca_file: str | None = None
    """A CA bundle to verify them with (null: the system's)."""
    timeout: float = pydantic.Field(default=30.0, gt=0)
    """Seconds per request before it is abandoned (retryable)."""
    page_size: int = pydantic.Field(default=5000, ge=1, le=5000)
    """``per_page`` of list requests (CF allows 1..5000)."""
    lookup_batch_size: int = pydantic.Field(default=50, ge=1, le=500)
    """Usernames per ``GET /v3/users?usernames=`` request (keeps URLs short)."""
    scan_above: int = pydantic.Field(default=1000, ge=1)
    """Above this many euids in one lookup, scan every user of the origin instead of filtering."""
    job_timeout: float = pydantic.Field(default=60.0, gt=0)
    """Seconds to wait for a role deletion job within a change; past it the change is pending
    (retried, the tenant requeued), and the same job is polled again."""
    job_poll_interval: float = pydantic.Field(default=0.5, gt=0)
    """Seconds between two polls of a role deletion job (doubling, at most 5)."""

    @property
    def quota_owner(self) -> str:
        """The Cloud Controller and the UAA client. Its rate limiter counts the requests "an
        authenticated user or client is allowed to make for all CAPI endpoints over the configured
        interval" (docs.cloudfoundry.org/running/setting-rate-limit-cloud-api.html,
        ``cc.rate_limiter.general_limit``): per client, per Cloud Controller."""
        return f"cloudfoundry:{self.api_url.rstrip('/')}:{self.client_id}"
