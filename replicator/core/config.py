"""The config file (``replicator.yaml``) as typed models. Every field is documented where it is
declared; ``replicator schema`` and the docs are generated from these docstrings."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    field_validator,
    model_validator,
)

from platforms.contract import Options
from platforms.contract import SecretRef as SecretRef  # re-exported: other config models use it

DEFAULT_GROUP_NAME_PATTERN = "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"


Model = Options
"""Base of every config model: camelCase keys, unknown keys are errors, docstrings documented."""


_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")


def parse_duration(value: Any) -> float:
    """``90``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and any(m.groups()):
            d, h, mi, s = (int(g or 0) for g in m.groups())
            return float(d * 86400 + h * 3600 + mi * 60 + s)
    raise ValueError(f"{value!r} is not a duration (examples: 30s, 10m, 1h30m, 7d)")


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda v: f"{int(v)}s")]


class RoleMapping(Model):
    """How one meshProject role appears on a platform."""

    platform_group_alias: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Short name of the role on the platform; fills ``#{platformGroupAlias}`` in group names."""
    platform_roles: tuple[str, ...] = ()
    """Platform role ids granted to the group on the tenant (permission set ARNs on AWS, role
    definition ids on Azure, ``roles/...`` on GCP, role names on OpenStack, ClusterRoles on Kubernetes)."""


ExternalGrantsMode = Literal["remove", "keep"]


class KeepMatching(Model):
    """Keep external grants whose role matches the regular expression, remove the others."""

    keep_matching: str
    """Python regular expression matched against the whole role id."""

    @field_validator("keep_matching")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class DeprovisionConfig(Model):
    """``deprovisionCreatedUsers``: delete the users the replicator created on this platform once no
    binding of any of its tenants needs them, after a grace period. Users it found are never
    touched."""

    enabled: bool = False
    grace_period: Duration = 7 * 86400.0
    """How long a created user stays after the last binding that needed it went (default 7 days):
    a binding back within it keeps the user, with its history on the platform."""


class PlatformConfig(Model):
    """One platform instance (``<platform>.<location>``) and how the replicator talks to it.

    Besides the keys below, a platform carries one block named after its ``type`` (``aws:``,
    ``azure:``, ...) with the driver's own settings; the driver validates it."""

    model_config = ConfigDict(extra="allow")

    identifier: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9-]*$")
    """``<platform>.<location>``, e.g. ``aws.eu-central-1``."""
    type: Literal["aws", "azure", "gcp", "openstack", "kubernetes", "openshift", "cloudfoundry"]
    """Which driver serves this platform."""
    euid_pattern: str = "%s"
    """How a user's euid becomes the platform's user name: exactly one ``%s`` (as is) or ``%S``
    (upper case); ``%%`` is a literal percent."""
    user_group_name_pattern: str = DEFAULT_GROUP_NAME_PATTERN
    """Name of the group per tenant and role; placeholders ``#{name}`` or ``#{name:FORMAT}``.
    Must contain ``#{platformGroupAlias}``."""
    external_grants: ExternalGrantsMode | KeepMatching | None = None
    """What to do with roles bound to an owned group that the replicator did not grant:
    ``remove``, ``keep``, or ``{keepMatching: REGEX}``; null = the platform's default."""
    role_mappings: dict[str, RoleMapping] = Field(default_factory=dict)
    """Default role mappings for every landing zone on this platform (a landing zone overrides per role)."""
    delete_removed_tenants: bool = False
    """A tenant the state store knows but the inventory no longer has is deleted like a tenant
    marked ``deleted: true`` (all access revoked, then its owned groups deleted). False: it is left
    as it is and reported, unless ``--allow-deletions`` is given."""
    skip_group_cleanup: bool = False
    """When a tenant is deleted, revoke its groups' roles but keep the groups (and their members)."""
    deprovision_created_users: DeprovisionConfig = DeprovisionConfig()
    """Off by default; only for platforms that create users (OpenStack ``federatedIdp``, Azure
    ``b2bGuestInvitation``)."""

    _options: Any = PrivateAttr(default=None)

    @property
    def options(self) -> Any:
        """The validated driver block (a model of the driver's ``options_model``)."""
        return self._options

    def driver_block(self) -> Any:
        return (self.model_extra or {}).get(self.type)


class LandingZone(Model):
    """A landing zone: how projects on one platform get their roles."""

    identifier: str
    platform: str
    """Identifier of the platform this landing zone belongs to."""
    role_mappings: dict[str, RoleMapping] = Field(default_factory=dict)
    """meshProject role (admin, user, reader, ...) -> platform group alias and platform roles."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Tags of every tenant in this landing zone, for ``#{tag<Name>}`` in group name patterns
    (a tenant's, project's own tag of the same name comes first)."""

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):  # YAML turns `costCenter: 4711` into a number; tags are text
            return {
                k: (str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v)
                for k, v in value.items()
            }
        return value


class ScheduleConfig(Model):
    """When the daemon reconciles (``replicator run``)."""

    interval: Duration = 600.0
    """Period of the full reconcile of every tenant."""
    jitter: Duration = 30.0
    """Random delay added to each period so replicas do not fire together."""
    concurrency: dict[str, int] = Field(default_factory=lambda: {"default": 8})
    """Tenants reconciled at once, per platform identifier; ``default`` for the others."""

    lease_ttl: Duration = 60.0
    """How long a replica's claim on a tenant lasts unless renewed (every third of it while the
    tenant runs, and before each change). A killed replica's tenants are taken over after it."""
    rate_limits: dict[str, float] = Field(default_factory=dict)
    """Requests per second, per platform identifier: the platform's quota. Platform entries whose
    quota belongs to the same owner (one AWS Identity Center instance, one Entra tenant and app,
    ...) share one budget at the smallest of their rates; the daemon's workers share it, and
    replicas on PostgreSQL split it between those working against it. A Retry-After from the
    platform pauses a replica's budget for all its workers. Unset = no limit."""

    def concurrency_for(self, platform: str) -> int:
        return max(1, self.concurrency.get(platform, self.concurrency.get("default", 8)))


class ApiKey(Model):
    """A key for the daemon's HTTP API, sent as ``Authorization: Bearer <secret>``."""

    name: str
    secret: SecretRef
    scopes: tuple[Literal["read", "write", "admin"], ...] = ("read",)
    """``read``: status and GET of objects; ``write``: triggers and object writes; ``admin``:
    objects other sources own (take-over) and everything else."""

    def matches(self, presented: str) -> bool:
        """Constant-time comparison; a key whose secret cannot be read matches nothing."""
        import hmac

        try:
            expected = self.secret.resolve()
        except ValueError:
            return False
        return hmac.compare_digest(expected.encode(), presented.encode())


class ClaimMapping(Model):
    """Which ID-token claim fills which meshUser field."""

    id: str = "sub"
    """The claim whose value becomes the meshUser's name (stable, immutable id)."""
    username: str = "preferred_username"
    email: str = "email"
    given_name: str = "given_name"
    family_name: str = "family_name"
    euid: str = "preferred_username"
    """The claim that carries the euid (updated on every login)."""


OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""Signature algorithms an OIDC provider may be configured with (asymmetric only: ``none`` and
HS256/384/512 are refused, HMAC would let anyone who has the public key forge tokens)."""


class OidcProvider(Model):
    """An OpenID Connect identity provider whose ID tokens the daemon accepts at
    ``POST /v1/login/{name}`` (the token is verified, then the meshUser is created or updated)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    """Short name of the provider; stored users carry the source ``oidc:<name>``."""
    issuer: str
    """The ``iss`` tokens must carry; the discovery document is read from
    ``<issuer>/.well-known/openid-configuration``."""
    audience: tuple[str, ...] = Field(min_length=1)
    """Accepted ``aud`` values (the client ids of the applications that send logins)."""
    algorithms: tuple[str, ...] = ("RS256",)
    """Accepted signature algorithms; ``none`` and HMAC algorithms are refused."""
    claims: ClaimMapping = ClaimMapping()
    jwks_cache_ttl: Duration = 600.0
    """How long the provider's keys are cached; an unknown ``kid`` refetches them (key rotation)
    at most once per ``jwksMinRefresh``."""
    jwks_min_refresh: Duration = 30.0
    leeway: Duration = 60.0
    """Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    timeout: Duration = 10.0
    """Timeout of each fetch of the discovery document and the keys."""

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in v if a not in OIDC_ALGORITHMS]
        if bad:
            raise ValueError(
                f"not allowed: {', '.join(bad)} (none and HMAC algorithms are always refused); "
                f"use {', '.join(OIDC_ALGORITHMS)}"
            )
        if not v:
            raise ValueError("give at least one algorithm")
        return v

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("the issuer is a URL (https://...)")
        return v


class LdapAttributes(Model):
    """Which LDAP attribute fills which meshUser field."""

    id: str = "entryUUID"
    """Attribute whose value becomes the meshUser's name (stable: ``entryUUID``, ``objectGUID``, ``uid``)."""
    username: str = "uid"
    email: str = "mail"
    given_name: str = "givenName"
    family_name: str = "sn"
    euid: str = "uid"
    """Attribute that carries the euid (any attribute)."""
    group_name: str = "cn"
    """Attribute of a group entry whose value becomes the meshUserGroup's name."""


class LdapConnector(Model):
    """An LDAP directory synced periodically into meshUsers and meshUserGroups (``ldap3``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    """Short name; stored objects carry the source ``ldap:<name>``."""
    url: str
    """``ldap://host:389`` or ``ldaps://host:636``."""
    bind_dn: str | None = None
    bind_password: SecretRef | None = None
    start_tls: bool = False
    ca_file: str | None = None
    user_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    group_base: str | None = None
    """Null: groups are not synced."""
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
    membership: Literal["member", "memberOf"] = "member"
    """Group membership from the group's ``member`` attribute, or from the user's ``memberOf``."""
    attributes: LdapAttributes = LdapAttributes()
    page_size: int = Field(default=500, ge=1, le=10000)
    interval: Duration = 900.0
    """How often the daemon syncs."""
    timeout: Duration = 30.0
    allow_empty: bool = False
    """Accept a complete read that returns no users (every user of this connector is then
    deprovisioned). False: such a read is refused as a failed sync, nothing changes."""


class ScimConfig(Model):
    """The SCIM 2.0 service provider at ``/scim/v2`` (Entra ID, Okta provisioning)."""

    enabled: bool = False
    token: SecretRef | None = None
    """Bearer token the provisioning client sends; required when enabled."""
    euid_attribute: str = "userName"
    """Which SCIM attribute of a User becomes the meshUser's euid: ``userName``, ``externalId``,
    ``emails`` (the primary email, else the first), ``emails.work`` (the email of that type), or
    an enterprise extension attribute (``employeeNumber``, or its full
    ``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber``)."""
    max_page_size: int = Field(default=500, ge=1)
    """Most resources one list answer holds (``count`` is capped to it)."""
    max_request_bytes: int = Field(default=1_000_000, ge=1)
    """Largest request body taken (larger: 413, read no further). A User or a PATCH of a few
    hundred members is a few kilobytes."""

    @field_validator("euid_attribute")
    @classmethod
    def _known_attribute(cls, v: str) -> str:
        enterprise = ("employeeNumber", "costCenter", "organization", "division", "department")
        name = v.removeprefix("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:")
        if v in ("userName", "externalId", "emails") or v.startswith("emails.") or name in enterprise:
            return v
        raise ValueError(
            f"{v!r} is not a SCIM attribute the euid can come from: userName, externalId, emails, "
            f"emails.<type>, or an enterprise attribute ({', '.join(enterprise)})"
        )

    @model_validator(mode="after")
    def _token_when_enabled(self) -> ScimConfig:
        if self.enabled and self.token is None:
            raise ValueError("identity.scim.enabled needs a token (the bearer token clients send)")
        return self


class SamlProvider(Model):
    """A SAML 2.0 identity provider (AD FS, Google, ...) whose signed assertions the daemon accepts at
    its assertion consumer service, ``POST /v1/saml/{name}/acs`` (HTTP-POST binding, IdP-initiated);
    the user is created or updated as an OIDC login does it (docs/saml.md)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    """Short name; stored users carry the source ``saml:<name>``."""
    idp_metadata: str
    """The IdP's metadata XML file (relative to the config file): its entity id and signing
    certificates."""
    sp_entity_id: str
    """This service provider's entity id: assertions must name it as their audience."""
    acs_url: str = Field(pattern=r"^https?://")
    """The public URL of ``/v1/saml/{name}/acs`` as the IdP posts to it (Recipient, Destination)."""
    attributes: ClaimMapping = ClaimMapping(
        id="NameID", username="NameID", email="email", given_name="givenName", family_name="surname",
        euid="NameID",
    )  # fmt: skip
    """Which attribute fills which meshUser field; ``NameID`` is the subject's NameID."""
    leeway: Duration = 60.0
    """Clock skew allowed on NotBefore and NotOnOrAfter."""


class IdentityConfig(Model):
    """Where users and user groups come from besides the inventory files. Every source writes into
    the state store: set ``storedObjects: true`` to use them."""

    oidc: tuple[OidcProvider, ...] = ()
    saml: tuple[SamlProvider, ...] = ()
    ldap: tuple[LdapConnector, ...] = ()
    scim: ScimConfig = ScimConfig()

    @field_validator("oidc", "saml")
    @classmethod
    def _unique_provider_names(
        cls, v: tuple[OidcProvider, ...] | tuple[SamlProvider, ...]
    ) -> tuple[OidcProvider, ...] | tuple[SamlProvider, ...]:
        names = [p.name for p in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"provider name(s) used more than once: {', '.join(dup)}")
        return v

    @field_validator("ldap")
    @classmethod
    def _unique_ldap_names(cls, v: tuple[LdapConnector, ...]) -> tuple[LdapConnector, ...]:
        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"connector name(s) used more than once: {', '.join(dup)}")
        return v


class ApiConfig(Model):
    """The daemon's HTTP API (``/v1/...``)."""

    keys: tuple[ApiKey, ...] = ()
    max_request_bytes: int = Field(default=5_000_000, ge=1)
    """Largest body ``PUT /api/meshobjects`` accepts (larger: 413)."""
    max_request_objects: int = Field(default=5000, ge=1)
    """Most meshObjects one ``PUT /api/meshobjects`` may hold (more: 413)."""


def _parse_max_deletions(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError as e:
            raise ValueError(f"{value!r} is not a percentage") from e
        if not 0 <= pct <= 100:
            raise ValueError("a percentage is between 0% and 100%")
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"{value!r}: give a count (e.g. 50) or a percentage (e.g. '25%')")


class ReplicationConfig(Model):
    """Settings shared by every platform."""

    aad_user_lookup_strategy: Literal["UserByMailLookupStrategy", "UserByUsernameLookupStrategy"] = (
        "UserByMailLookupStrategy"
    )
    """Entra ID user attribute euids are matched against: ``mail`` or ``userPrincipalName``."""
    max_deletions: Annotated[int | str, BeforeValidator(_parse_max_deletions)] = "25%"
    """Most memberships one run may take away from a tenant: a count, or a percentage of the
    tenant's managed memberships (rounded up, at least one). Past it the tenant fails with
    DELETION_GUARD and nothing is removed until ``--allow-deletions``."""
    lookup_cache_ttl: Duration = 3600.0
    """How long a found platform user is remembered in the state store (not-found is never cached)."""

    def deletion_limit(self, managed_memberships: int) -> int:
        """Memberships a run may remove from a tenant that has ``managed_memberships``."""
        if isinstance(self.max_deletions, int):
            return self.max_deletions
        # Decimal, not float: 8.8% of 375 is exactly 33, not 33.000000000000004 rounded up to 34.
        pct = Decimal(self.max_deletions.rstrip("%"))
        return max(1, math.ceil(managed_memberships * pct / 100))


class Config(Model):
    """``replicator.yaml``."""

    state: str = "sqlite:///replicator.db"
    """SQLAlchemy URL of the state store; a relative SQLite path is relative to the config file."""
    inventory: tuple[str, ...] = ()
    """Files or folders of meshObjects (YAML, several documents per file), relative to the config file."""
    stored_objects: bool = False
    """Read the meshObjects kept in the state store too (written by the object API and the identity
    sources). An object defined both in a file and in the store is taken from the file; files
    are read-only through the API."""
    identity: IdentityConfig = IdentityConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    replication: ReplicationConfig = ReplicationConfig()
    api: ApiConfig = ApiConfig()
    platforms: tuple[PlatformConfig, ...] = ()
    landing_zones: tuple[LandingZone, ...] = ()

    @model_validator(mode="after")
    def _identity_needs_stored_objects(self) -> Config:
        # Identity sources write meshObjects into the state store; without storedObjects they
        # would be written but never read. (Other sources: add yours to ``used``.)
        used = [f"identity.oidc ({len(self.identity.oidc)} provider(s))"] if self.identity.oidc else []
        if self.identity.ldap:
            used.append(f"identity.ldap ({len(self.identity.ldap)} connector(s))")
        if self.identity.scim.enabled:
            used.append("identity.scim (enabled)")
        if used and not self.stored_objects:
            raise ValueError(f"storedObjects: true is required by {', '.join(used)}")
        return self

    def platform(self, identifier: str) -> PlatformConfig | None:
        return next((p for p in self.platforms if p.identifier == identifier), None)

    def landing_zone(self, identifier: str) -> LandingZone | None:
        return next((z for z in self.landing_zones if z.identifier == identifier), None)
