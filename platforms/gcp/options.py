"""The ``gcp:`` block of a platform in the config file."""

from __future__ import annotations

from typing import Literal

import pydantic

from platforms.options import Options, SecretRef


class GcpEndpoints(Options):
    """Where each API is called (null: Google's public endpoint); for emulators, private service
    connect or sovereign clouds."""

    cloudidentity: str | None = None
    """Base URL of the Cloud Identity API (default ``https://cloudidentity.googleapis.com/``)."""
    admin: str | None = None
    """Base URL of the Admin SDK (default ``https://admin.googleapis.com/``)."""
    cloudresourcemanager: str | None = None
    """Base URL of Resource Manager (default ``https://cloudresourcemanager.googleapis.com/``)."""

    def all_set(self) -> bool:
        return None not in (self.cloudidentity, self.admin, self.cloudresourcemanager)


class GcpOptions(Options):
    """The ``gcp:`` block of a platform in the config file."""

    customer_id: str = pydantic.Field(pattern=r"^[A-Za-z0-9_]+$")
    """The Cloud Identity / Workspace customer id (``C01abc23d``; Admin console, Account settings);
    groups are created under ``customers/<customerId>``, users are searched in it."""
    domain: str = pydantic.Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
    """The (lowercase) domain of the group emails: a group is ``<rendered name>@<domain>``."""
    credentials_file: SecretRef | str | None = None
    """A google-auth credentials JSON: a service account key, a workload identity federation
    (external account) configuration, or an authorized user. A path, or ``{file: PATH}``, or
    ``{env: NAME}`` holding the JSON itself. Null: application default credentials
    (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server of GCE/GKE/Cloud Run, gcloud)."""
    admin_subject: str | None = None
    """A Workspace administrator the service account impersonates for the Admin SDK (domain-wide
    delegation); null: the credentials call the Admin SDK as themselves (a service account with an
    admin role assigned)."""
    user_lookup_strategy: Literal["email", "externalId"] = "email"
    """How transformed euids are matched: ``email`` against ``primaryEmail``, ``externalId``
    against the values of the users' ``externalIds``; both case-insensitive."""
    endpoints: GcpEndpoints = GcpEndpoints()
    """Endpoint overrides per API: ``{cloudidentity, admin, cloudresourcemanager}``."""
    anonymous: bool = False
    """Send no credentials at all; allowed only when every endpoint is overridden (a local test
    server)."""
    timeout: float = pydantic.Field(default=60.0, gt=0)
    """Seconds per request before it is abandoned (retryable)."""
    user_list_threshold: int = pydantic.Field(default=50, ge=0)
    """When more euids than this are unknown to a lookup, list the customer's users once (500 a
    page) instead of one ``users.get`` each (email strategy only)."""
    policy_attempts: int = pydantic.Field(default=5, ge=1, le=20)
    """Read-modify-write attempts of one IAM policy edit when others change the policy at the same
    time (HTTP 409 on a stale etag); after the last the change is retryable."""
    pending_retry_after: float | None = pydantic.Field(default=None, gt=0, le=3600)
    """Seconds before a change is tried again when Google has not caught up with a write of ours
    (IAM does not know a group we created yet; a group create still running). Null: the engine's
    backoff within the run (1 s, 2 s), then the tenant is requeued after 30 s."""
    group_scan_threshold: int = pydantic.Field(default=20, ge=0)
    """A run whose observations name at least this many groups reads every group of the customer
    first (``groups.list``, view FULL, 500 a page) instead of one ``groups.get``/``groups.lookup``
    per group; the scan stops (and observe reads group by group) once it has cost half as many calls
    as it would save. 0 = never scan."""

    @pydantic.model_validator(mode="after")
    def _anonymous_only_locally(self) -> GcpOptions:
        if self.anonymous and not self.endpoints.all_set():
            raise ValueError("anonymous is only allowed with every endpoint overridden (a test server)")
        if self.anonymous and self.credentials_file is not None:
            raise ValueError("give credentialsFile or anonymous, not both")
        return self

    @property
    def quota_owner(self) -> str:
        """The Google Cloud project and the user the requests are counted against, as far as the
        config tells them: the credentials (a service account belongs to one project, and its
        requests are counted in it) and the administrator they impersonate. The Directory API
        counts "queries per minute per user per Google Cloud project" (developers.google.com
        workspace/admin/directory/v1/limits, ``userRateLimitExceeded``), and the Cloud Identity
        API's quotas are the project's. Entries with the same credentials and subject share one
        budget; application default credentials are one identity per process."""
        creds = self.credentials_file
        if isinstance(creds, SecretRef):
            source = f"env:{creds.env}" if creds.env is not None else f"file:{creds.file}"
        elif creds is not None:
            source = f"file:{creds}"
        else:
            source = "anonymous" if self.anonymous else "application-default"
        return f"gcp:{source}:{self.admin_subject or 'self'}"
