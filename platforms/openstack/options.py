"""The ``openstack:`` block of a platform in the config file."""

from __future__ import annotations

from typing import Literal

import pydantic

from platforms.options import Options, SecretRef


class PasswordCredentials(Options):
    """Log in as a Keystone user (password authentication, project-scoped token)."""

    username: str = pydantic.Field(min_length=1)
    """The Keystone user the replicator acts as (it needs the admin role, or a policy that allows
    managing groups, users and role assignments)."""
    password: SecretRef
    """The user's password: ``{env: NAME}`` or ``{file: PATH}``."""
    user_domain: str = "Default"
    """Domain (name) of that user."""
    project_name: str = "admin"
    """Project the token is scoped to."""
    project_domain: str = "Default"
    """Domain (name) of that project."""


class ApplicationCredentials(Options):
    """Log in with a Keystone application credential."""

    application_credential_id: str = pydantic.Field(min_length=1)
    """The application credential's id."""
    application_credential_secret: SecretRef
    """Its secret: ``{env: NAME}`` or ``{file: PATH}``."""


class CloudCredentials(Options):
    """Take authentication from a ``clouds.yaml`` entry (openstacksdk's usual search path)."""

    cloud: str = pydantic.Field(min_length=1)
    """Name of the cloud in ``clouds.yaml``."""


class FederatedIdp(Options):
    """Create bound users missing in Keystone as federated users of an identity provider."""

    enabled: bool = False
    """Create a bound user missing in Keystone (off: a missing user is a USER_NOT_FOUND warning)."""
    idp_id: str | None = None
    """The Keystone identity provider id users log in through (required when enabled)."""
    protocol_id: str = "openid"
    """The federation protocol of that identity provider."""
    user_domain: str = "MeshUsers"
    """Domain (name) the created users go to; it must exist."""
    unique_id: Literal["euid"] = "euid"
    """What becomes the user's federated ``unique_id`` (the transformed euid, which is also the
    user's name)."""

    @pydantic.model_validator(mode="after")
    def _idp_when_enabled(self) -> FederatedIdp:
        if self.enabled and not self.idp_id:
            raise ValueError("federatedIdp.enabled needs idpId")
        return self


class OpenstackOptions(Options):
    """The ``openstack:`` block of a platform in the config file."""

    auth_url: str | None = None
    """Keystone's v3 URL, e.g. ``https://keystone.example.com/v3`` (any endpoint: an emulator, a
    sovereign cloud). Not needed with ``cloud`` / ``credentials.cloud``."""
    cloud: str | None = None
    """A ``clouds.yaml`` entry to take authentication (and URL) from, instead of ``credentials``."""
    group_domain: str = "Default"
    """Keystone domain (name, or id) the groups are created in."""
    user_domain: str = "Default"
    """Keystone domain (name, or id) users are looked up in, by ``User.name``."""
    credentials: PasswordCredentials | ApplicationCredentials | CloudCredentials | None = None
    """How the replicator logs in: ``{username, password, userDomain, projectName, projectDomain}``,
    ``{applicationCredentialId, applicationCredentialSecret}`` or ``{cloud: NAME}``."""
    federated_idp: FederatedIdp = FederatedIdp()
    """Create bound users missing in Keystone as federated users (off by default)."""
    region_name: str | None = None
    """Region of the identity endpoint in the catalog (null: any)."""
    interface: Literal["public", "internal", "admin"] = "public"
    """Which catalog interface of the identity service to call."""
    endpoint_override: str | None = None
    """Call the identity API here instead of the catalog's endpoint (e.g. when the catalog names
    internal addresses)."""
    verify: bool = True
    """Verify the server's TLS certificate."""
    ca_file: str | None = None
    """A CA bundle to verify the server's certificate with (null: the system's)."""
    timeout: float = pydantic.Field(default=60.0, gt=0)
    """Seconds per request before it is abandoned (retryable)."""
    group_scan_threshold: int = pydantic.Field(default=20, ge=0)
    """A run whose observations name at least this many groups reads every group of
    ``groupDomain`` first (one ``GET /v3/groups?domain_id=``) instead of one ``GET /v3/groups/{id}``
    (or lookup by name) per group. 0 = never scan."""

    @pydantic.model_validator(mode="after")
    def _how_to_log_in(self) -> OpenstackOptions:
        from_cloud = self.cloud is not None or isinstance(self.credentials, CloudCredentials)
        if not from_cloud and (self.auth_url is None or self.credentials is None):
            raise ValueError("give authUrl and credentials, or cloud (clouds.yaml)")
        return self

    @property
    def quota_owner(self) -> str:
        """The Keystone endpoint. Keystone has no request quota of its own; operators put a rate
        limiting proxy in front of the API ("deploy external rate-limiting proxies or web
        application firewalls", docs.openstack.org/security-notes/OSSN-0068.html), which limits
        what reaches that endpoint: one budget per identity endpoint (``endpointOverride``, else
        ``authUrl``, else the ``clouds.yaml`` entry)."""
        cloud = self.cloud or getattr(self.credentials, "cloud", None)
        endpoint = self.endpoint_override or self.auth_url or f"cloud:{cloud}"
        return f"openstack:{endpoint.rstrip('/')}"
