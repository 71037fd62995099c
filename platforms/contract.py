"""The driver contract: the neutral IAM vocabulary between the engine and every platform driver.

A driver never sees meshObjects and the engine never sees an SDK type: everything that crosses
the seam is one of the frozen dataclasses below. Every driver offers the same operations in the
same order (``lookup_users``, ``observe``, ``apply``, ``capabilities``), imports its SDK lazily,
and raises only the error types defined here (or subclasses of them).

What drivers share beyond this protocol (a base class, the error mapping helpers, the ownership
marker, the group scan) is in :mod:`platforms.kit`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel

from platforms.options import OPTIONS_CONFIG as OPTIONS_CONFIG  # re-exported: config models use it
from platforms.options import Options as Options
from platforms.options import SecretRef as SecretRef  # re-exported: config models use it

PLATFORM_TYPES = ("aws", "azure", "gcp", "openstack", "kubernetes", "openshift", "cloudfoundry")
"""Every platform type a config may name (``platforms.registry`` says which have a driver)."""


class Action(StrEnum):
    """The few change kinds every platform understands, in the order a plan applies them."""

    CREATE_GROUP = "create_group"
    ENSURE_USER = "ensure_user"
    ADD_MEMBER = "add_member"
    GRANT = "grant"
    REVOKE = "revoke"
    REMOVE_MEMBER = "remove_member"
    DELETE_GROUP = "delete_group"
    DELETE_USER = "delete_user"
    """A user the replicator created and no binding needs any more (``deprovisionCreatedUsers``):
    not of a tenant, so the change names no group."""

    @property
    def adds(self) -> bool:
        """True for changes that give access (they run before anything is taken away)."""
        return self in _ADDING


_ADDING = frozenset({Action.CREATE_GROUP, Action.ENSURE_USER, Action.ADD_MEMBER, Action.GRANT})
ACTION_ORDER: tuple[Action, ...] = tuple(Action)


@dataclass(frozen=True, order=True)
class TenantRef:
    """One tenant of one platform: the unit a driver observes and changes."""

    key: str
    """``WORKSPACE/PROJECT/PLATFORM``, the name users type."""
    platform: str
    """The platform identifier, e.g. ``aws.eu-central-1``."""
    local_id: str
    """The platform's own id of the tenant (AWS account id, subscription id, namespace, ...)."""


@dataclass(frozen=True, order=True)
class PlatformUser:
    """A user as the platform knows it."""

    id: str
    """The platform's immutable id of the user (what memberships refer to)."""
    name: str
    """The value of the lookup attribute (userName, userPrincipalName, ...) as the platform spells it."""
    awaiting_login: bool = field(default=False, compare=False)
    """The platform keeps no user object under this name yet and creates one at the first login
    (OpenShift): a membership may name it, and takes effect once that exact name logs in. The plan
    adds such a member and warns (``USER_AWAITING_LOGIN``), so a wrong euid pattern shows."""


@dataclass(frozen=True)
class OwnedGroup:
    """What the state store remembers about a group this replicator created for a tenant."""

    alias: str
    name: str
    platform_id: str | None
    """None while the create was started but not confirmed (a crash in between): the driver then
    finds the group by name and adopts it only if it carries our marker."""
    roles: frozenset[str] = frozenset()
    """Roles this replicator granted to the group (so a role dropped from a mapping is revoked
    even where external grants are kept)."""
    members: frozenset[str] = frozenset()
    """Platform user ids this replicator added to the group and has not removed since. Drivers of
    platforms whose memberships carry no marker (Cloud Foundry roles) report only these as
    members, so that access someone else gave is never taken away."""
    created_at: datetime | None = None
    """When the store first recorded the group (the create's intent; None: not known). Drivers of
    eventually consistent directories tell a group created a moment ago, which a replica may not
    show yet, from one deleted by hand."""
    project_role: str = ""
    """The meshProject role the group stands for, as recorded ("": not recorded yet). The deletion
    guard tells a group renamed through its alias (same role, same users) from access taken away."""


@dataclass(frozen=True)
class ObservedGroup:
    """An owned group as it is on the platform right now."""

    id: str
    name: str
    alias: str
    members: frozenset[PlatformUser]
    roles: frozenset[str]
    """Every role bound to the group on the tenant, ours or not."""


@dataclass(frozen=True)
class ObservedTenant:
    """The complete observation of one tenant. A driver that cannot read everything raises instead
    of returning a partial observation (a partial read must never shrink the plan)."""

    groups: tuple[ObservedGroup, ...] = ()
    vanished: tuple[str, ...] = ()
    """Names of owned groups that no longer exist on the platform (deleted by someone else)."""
    foreign: Mapping[str, str] = field(default_factory=dict)
    """Desired group name -> platform id of an existing group that is not ours."""


@dataclass(frozen=True)
class Change:
    """Exactly one operation on a platform. Applying it twice is the same as once."""

    action: Action
    group: str
    """The group name (for platforms without groups: the binding name the driver derives)."""
    alias: str
    user: PlatformUser | None = None
    euid: str | None = None
    """The transformed euid the member change is for."""
    role: str | None = None
    note: str | None = None
    """Why, when it is not obvious (rename, policy, tenant deleted)."""

    @property
    def subject(self) -> str:
        """The user or role this change is about, for logs and records."""
        if self.user is not None:
            return self.user.name
        return self.role or self.euid or ""


@dataclass(frozen=True)
class Capabilities:
    """Facts about a platform that the planner and the validator need."""

    external_grants_default: Literal["remove", "keep"]
    """What happens to roles bound to an owned group that the replicator did not grant."""
    lookup_attribute: str
    """The platform user attribute transformed euids are matched against."""
    has_groups: bool = True
    group_name_prefix: str = ""
    """Prepended to every rendered group name (a marker of ownership, e.g. ``mst-`` on AWS)."""
    max_group_name_length: int = 256
    group_name_pattern: re.Pattern[str] | None = None
    """Characters the platform accepts in a group name (None = anything)."""
    ensures_users: bool = False
    role_pattern: re.Pattern[str] | None = None
    """What a platform role id looks like (None = anything); checked by ``replicator validate``."""
    role_example: str = ""

    def check_role(self, role: str) -> str | None:
        """Return why the platform would refuse this role id, or None when it looks right."""
        if self.role_pattern is not None and not self.role_pattern.fullmatch(role):
            hint = f" (like {self.role_example})" if self.role_example else ""
            return f"{role!r} is not a role id this platform accepts{hint}"
        return None

    def check_group_name(self, name: str) -> str | None:
        """Return why the platform would refuse this group name, or None when it is fine."""
        if not name:
            return "renders an empty group name"
        if len(name) > self.max_group_name_length:
            return (
                f"renders {name!r} ({len(name)} characters, the platform allows {self.max_group_name_length})"
            )
        if self.group_name_pattern is not None and not self.group_name_pattern.fullmatch(name):
            return f"renders {name!r}, which has characters the platform refuses"
        return None


class PlatformError(Exception):
    """A platform call failed. The engine decides by type what to do next."""

    retryable: ClassVar[bool] = False


class RetryableError(PlatformError):
    """Throttled, timed out or unavailable: try again later."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the platform asked us to wait (Retry-After), when it said."""


class PendingError(RetryableError):
    """The platform has not caught up with our own write yet: it is eventually consistent and a
    replica it read from does not know the object this run just created (a new group unknown to
    the role API, a new principal not yet replicated to the authorization service). Retried
    within the run like any :class:`RetryableError`; when it outlasts the run the tenant is not
    failed but requeued after ``retry_after`` seconds (a default when None), with the warning
    PLATFORM_PENDING until it converges."""


class PermanentError(PlatformError):
    """Refused for a reason that repeating will not fix (permissions, bad ids, validation)."""


class UnknownUserError(PermanentError):
    """``ensure_user``: nobody behind the platform knows this user (the identity provider has no
    such account: a typo, a person who left), so the platform can neither find nor create them.
    Not a failure of the tenant: the user is reported ``USER_NOT_FOUND`` and the changes that
    waited for them are left out; everyone else's access is applied."""


class ForeignObjectError(PermanentError):
    """The object we would create exists and is not ours."""


class PlatformConfigError(PermanentError):
    """The platform block of the config cannot work (missing setting, unreadable credentials)."""


class CallBudget(Protocol):
    """The request budget of one platform, shared by every worker that talks to it.

    A driver wraps every request in ``async with self.budget:``; when the platform answers
    "throttled, retry after N seconds", it calls ``self.budget.pause(N)`` so that every caller
    waits, not just the one that was refused, and then raises ``RetryableError(retry_after=N)``."""

    async def __aenter__(self) -> None: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def pause(self, seconds: float) -> None: ...


class Unlimited:
    """The budget of a one-shot run: no limit, pauses are left to the caller's retries."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None


class Driver(ABC):
    """One platform. Sync SDKs run in worker threads behind these async methods."""

    capabilities: ClassVar[Capabilities]
    options_model: ClassVar[type[BaseModel]]

    def __init__(self, identifier: str, options: Any) -> None:
        self.identifier = identifier
        self.options = options
        self.budget: CallBudget = Unlimited()
        """Set by the engine (the daemon shares one per platform); see :class:`CallBudget`."""
        self.created_users: set[str] = set()
        """Platform user ids this instance created (``ensure_user`` that did not find the user):
        the engine records them as the replicator's own; only those are ever deprovisioned."""

    @classmethod
    def capabilities_for(cls, options: Any) -> Capabilities:
        """The capabilities of an instance configured with ``options``: the class's by default; a
        driver whose options change a fact (Azure's lookup attribute) overrides this."""
        return cls.capabilities

    @classmethod
    def quota_owner(cls, identifier: str, options: Any) -> str:
        """What the platform's request quota belongs to, as a key computed from the config
        (``schedule.rateLimits`` is one budget per key: platform entries with the same key share
        it, and so do the replicas of the daemon). A driver's options model says it with a
        ``quota_owner`` property (the account, tenant and app, project, API server, ...); without
        one the platform entry is a quota of its own."""
        owner = getattr(options, "quota_owner", None)
        return owner if isinstance(owner, str) and owner else f"platform:{identifier}"

    @property
    def ensures_users(self) -> bool:
        """Whether this instance creates users the lookup did not find (``Action.ENSURE_USER``):
        what :meth:`capabilities_for` says for this instance's options."""
        return self.capabilities_for(self.options).ensures_users

    @abstractmethod
    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        """For each transformed euid, every platform user whose lookup attribute equals it
        case-insensitively (empty: not found; several: ambiguous). Raises on any failed call."""

    @abstractmethod
    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        """Read the owned groups of ``tenant`` and check whether each desired name (alias -> name)
        is free, ours, or taken by a foreign group. Complete or raise."""

    @abstractmethod
    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        """Perform one change; return the group's platform id for ``create_group``. A change that
        is already true is a success."""

    async def prepare(self, groups: int) -> None:  # noqa: B027 - optional hook
        """Called once per run before the engine observes its tenants, with how many groups those
        observations will name (owned records and desired names). A driver that can read many
        groups in fewer calls than one per group (AWS: one ListGroups scan) may do it here; the
        default does nothing, and a driver must still observe correctly without it."""

    def remember_users(self, users: Iterable[PlatformUser]) -> None:  # noqa: B027 - optional hook
        """Users the engine already knows (from its lookup cache), so that ``observe`` need not ask
        the platform who a member is. A hint: drivers without a use for it ignore it."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most drivers hold nothing
        """Release connections."""


DriverFactory = Callable[[str, Any], Driver]
