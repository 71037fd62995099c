"""The driver contract: the neutral IAM vocabulary between the engine and every platform driver.

A driver never sees meshObjects and the engine never sees an SDK type: everything that crosses
the seam is one of the frozen dataclasses below. Every driver module offers the same operations
in the same order (``lookup_users``, ``observe``, ``apply``, ``capabilities``), imports its SDK
lazily, and raises only the error types defined here.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import re
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it, for ``cls`` and its bases (the nearest wins).
    Read from the source only when a schema is generated, not when the class is built: pydantic's
    ``use_attribute_docstrings`` parses the source of every config class at import, about 0.2 s of
    every CLI start."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ in ("builtins", "pydantic.main"):
            continue
        docs.update(_own_attribute_docs(klass))
    return docs


@functools.cache
def _own_attribute_docs(klass: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):  # no source (frozen, interactive): no descriptions
        return {}
    body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _describe_fields(schema: dict[str, Any], cls: type) -> None:
    """``json_schema_extra`` of every config block: each property without a description gets the
    docstring of its field."""
    fields: Mapping[str, Any] = getattr(cls, "model_fields", {})
    properties = schema.get("properties") or {}
    for name, doc in attribute_docs(cls).items():
        info = fields.get(name)
        key = (info.alias or name) if info is not None else name
        prop = properties.get(key)
        if isinstance(prop, dict) and not prop.get("description"):
            prop["description"] = doc


OPTIONS_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    json_schema_extra=_describe_fields,
    frozen=True,
)
"""How every config block reads: camelCase keys, unknown keys are errors, immutable, and each
field's docstring is its description in ``replicator schema``."""

# Description/marker text that tells a platform object is owned by this replicator.
OWNER_MARKER = "managed-by: replicator"


def owner_marker(tenant: TenantRef) -> str:
    """The description a driver gives every group it creates: ours, and for which tenant."""
    return f"{OWNER_MARKER} tenant={tenant.key}"


def is_marked(description: str) -> bool:
    """The object carries our marker (for some tenant)."""
    return description.startswith(OWNER_MARKER)


def is_marked_for(description: str, tenant: TenantRef) -> bool:
    """The object carries our marker naming this tenant (needed to adopt a group found by name)."""
    return is_marked(description) and f"tenant={tenant.key}" in description[len(OWNER_MARKER) :].split()


class Action(StrEnum):
    """The few change kinds every platform understands, in the order a plan applies them."""

    CREATE_GROUP = "create_group"
    ENSURE_USER = "ensure_user"
    ADD_MEMBER = "add_member"
    GRANT = "grant"
    REVOKE = "revoke"
    REMOVE_MEMBER = "remove_member"
    DELETE_GROUP = "delete_group"

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


class PermanentError(PlatformError):
    """Refused for a reason that repeating will not fix (permissions, bad ids, validation)."""


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

    @classmethod
    def capabilities_for(cls, options: Any) -> Capabilities:
        """The capabilities of an instance configured with ``options``: the class's by default; a
        driver whose options change a fact (Azure's lookup attribute) overrides this."""
        return cls.capabilities

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


class MarkedGroup(Protocol):
    """What :func:`observe_marked_groups` needs of a driver's own group record."""

    @property
    def id(self) -> str: ...

    @property
    def description(self) -> str: ...


G = TypeVar("G", bound=MarkedGroup)


class GroupScan(Generic[G]):
    """One run's listing of every group of a directory (``Driver.prepare``), by id and by ``key``
    (the group's name; GCP: its email). What it holds is as old as the run: a group found gone
    later in the run is forgotten, so that observe reads it again (vanished) or takes its name as
    free."""

    def __init__(self, groups: Iterable[G], key: Callable[[G], str]) -> None:
        found = list(groups)
        self._key = key
        self.by_id: dict[str, G] = {g.id: g for g in found}
        self.by_key: dict[str, G] = {key(g): g for g in found}

    def forget(self, group: G) -> bool:
        """Drop ``group``; False when it is not this scan's (it was read since, not scanned)."""
        if self.by_id.get(group.id) is not group:
            return False
        del self.by_id[group.id]
        if self.by_key.get(self._key(group)) is group:
            del self.by_key[self._key(group)]
        return True


class GoneSinceScan(Exception):
    """Raised by the ``observe_group`` of :func:`observe_marked_groups` when a group taken from
    this run's :class:`GroupScan` turns out deleted since (its member list answered not found) and
    the driver has forgotten it: the tenant is observed again, the group now read by id (vanished)
    or its name free."""


async def observe_marked_groups(
    tenant: TenantRef,
    owned: Sequence[OwnedGroup],
    desired_names: Mapping[str, str],
    by_id: Callable[[str], Awaitable[G | None]],
    by_name: Callable[[str], Awaitable[G | None]],
    observe_group: Callable[[G, str], Awaitable[ObservedGroup]],
) -> ObservedTenant:
    """The ownership rules of ``Driver.observe`` for platforms whose groups carry a description
    marker: a recorded group is ours while it carries the marker; a group found only by name (a
    create that was never confirmed, or a leftover of a crash) is ours only when the marker names
    this tenant; everything else with our names is foreign; a recorded group that is gone vanished.
    A :class:`GoneSinceScan` from ``observe_group`` starts the observation again: the driver forgot
    that group first, so each restart has one scanned group fewer and this ends."""
    while True:
        try:
            return await _observe_marked_once(tenant, owned, desired_names, by_id, by_name, observe_group)
        except GoneSinceScan:
            continue


async def _observe_marked_once(
    tenant: TenantRef,
    owned: Sequence[OwnedGroup],
    desired_names: Mapping[str, str],
    by_id: Callable[[str], Awaitable[G | None]],
    by_name: Callable[[str], Awaitable[G | None]],
    observe_group: Callable[[G, str], Awaitable[ObservedGroup]],
) -> ObservedTenant:
    groups: list[ObservedGroup] = []
    vanished: list[str] = []
    foreign: dict[str, str] = {}
    for record in owned:
        if record.platform_id is not None:
            group = await by_id(record.platform_id)
            ours = group is not None and is_marked(group.description)
        else:
            group = await by_name(record.name)
            ours = group is not None and is_marked_for(group.description, tenant)
        if group is None:
            vanished.append(record.name)
        elif not ours:
            foreign[record.name] = group.id
        else:
            groups.append(await observe_group(group, record.alias))
    checked = {record.name for record in owned}
    for alias, name in desired_names.items():
        if name in checked:
            continue
        checked.add(name)
        group = await by_name(name)
        if group is None:
            continue
        if is_marked_for(group.description, tenant):
            groups.append(await observe_group(group, alias))
        else:
            foreign[name] = group.id
    return ObservedTenant(groups=tuple(groups), vanished=tuple(vanished), foreign=foreign)
