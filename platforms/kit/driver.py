"""The base class of every driver: options coercion, call counting, budget wrapping and the
``apply`` dispatch on the change kind."""

from __future__ import annotations

import asyncio
import threading
import typing
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

import pydantic

from platforms.contract import (
    Action,
    Change,
    Driver,
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    RetryableError,
)

if TYPE_CHECKING:
    from platforms.contract import TenantRef

P = ParamSpec("P")
T = TypeVar("T")
OptionsT = TypeVar("OptionsT", bound=pydantic.BaseModel)


class BaseDriver(Driver, Generic[OptionsT]):
    """A driver whose ``apply`` turns each change kind into one hook call.

    A subclass names its options model as the type parameter (``BaseDriver[AwsOptions]``: that is
    its ``options_model``) and its ``platform_name`` (the first word of every error message) as a
    class argument or attribute, sets up its own state in ``_setup`` (called by
    ``__init__`` once the options are validated), and implements the hooks ``_create_group``,
    ``_delete_group``, ``_add_member``, ``_remove_member``, ``_grant``, ``_revoke`` (and
    ``_ensure_user`` when it creates users)."""

    platform_name: ClassVar[str]
    """The platform type, as error messages name it (``aws``, ``openshift``, ...)."""
    role_noun: ClassVar[str] = "role"
    """What a role is called in the error for a grant or revoke that names none."""
    needs_group_id: ClassVar[bool] = True
    """Member and role changes need the group's platform id (False: the driver finds the group by
    its name, and the hooks get ``""`` for a group without one)."""
    ensure_user_refusal: ClassVar[str | None] = None
    """Why ``ensure_user`` is refused on this platform (None: the driver creates users)."""

    options: OptionsT

    def __init_subclass__(cls, platform_name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if platform_name is not None:
            cls.platform_name = platform_name
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is BaseDriver:
                (model,) = typing.get_args(base)
                if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
                    cls.options_model = model

    def __init__(self, identifier: str, options: OptionsT | Mapping[str, Any]) -> None:
        model = self.options_model
        validated: pydantic.BaseModel
        if isinstance(options, model):
            validated = options
        else:
            try:
                validated = model.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid {self.platform_name} block: {exc}") from exc
        super().__init__(identifier, validated)
        self.api_calls: Counter[str] = Counter()
        """Requests made by this driver, by operation name (one per request or page)."""
        self._count_lock = threading.Lock()
        self._setup()

    def _setup(self) -> None:
        """Set up the driver's own state (``self.options`` is validated by now); nothing by default."""

    def _count(self, operation: str) -> None:
        """Count one request (from any thread)."""
        with self._count_lock:
            self.api_calls[operation] += 1

    async def _in_thread(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` in a worker thread, within the platform's budget; a :class:`RetryableError`
        that says how long to wait pauses the budget, so every caller waits, not just this one."""
        async with self.budget:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except RetryableError as exc:
                if exc.retry_after:
                    self.budget.pause(exc.retry_after)
                raise

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        """Check what the change kind needs (an euid, a group id, a user, a role) and call its hook."""
        action = change.action
        name = self.platform_name
        if action is Action.ENSURE_USER:
            if self.ensure_user_refusal is not None:
                raise PermanentError(f"{name} ensure_user: {self.ensure_user_refusal}")
            if not change.euid:
                raise PermanentError(f"{name} ensure_user: the change names no euid")
            return await self._ensure_user(change.euid)
        if action is Action.DELETE_USER:
            if change.user is None:
                raise PermanentError(f"{name} delete_user: the change names no user")
            await self._delete_user(change.user)
            return None
        self._check_change(tenant, change)
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
            return None
        if group_id is None and self.needs_group_id:
            raise PermanentError(f"{name} {action}: no platform id for group {change.group!r}")
        gid = group_id or ""
        if action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"{name} {action}: change for {change.group!r} names no user")
            member = self._add_member if action is Action.ADD_MEMBER else self._remove_member
            await member(tenant, change.group, gid, change.user)
            return None
        if action in (Action.GRANT, Action.REVOKE):
            if not change.role:
                raise PermanentError(
                    f"{name} {action}: change for {change.group!r} names no {self.role_noun}"
                )
            binding = self._grant if action is Action.GRANT else self._revoke
            await binding(tenant, change.group, gid, change.role)
            return None
        raise PermanentError(f"{name}: unknown action {action!r}")

    # --- the hooks ------------------------------------------------------------------------------

    async def _delete_user(self, user: PlatformUser) -> None:
        """Delete a user this replicator created; gone already is done. Platforms that create no
        users refuse."""
        raise PermanentError(f"{self.platform_name} delete_user: this platform creates no users")

    def _check_change(self, tenant: TenantRef, change: Change) -> None:
        """Refuse a change (other than ``ensure_user``) before its hook runs; nothing by default."""

    async def _ensure_user(self, euid: str) -> str:
        """Create (or find) the user for ``euid``; the platform's user id."""
        raise PermanentError(f"{self.platform_name} ensure_user: not supported")

    @abstractmethod
    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        """Create the group (or adopt ours of that name); its platform id."""

    @abstractmethod
    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        """Delete the group when it is ours; gone already is success."""

    @abstractmethod
    async def _add_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        """Make ``user`` a member of the group (named ``group``, platform id ``group_id``)."""

    @abstractmethod
    async def _remove_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        """Take ``user`` out of the group; not a member is success."""

    @abstractmethod
    async def _grant(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        """Bind ``role`` to the group on the tenant."""

    @abstractmethod
    async def _revoke(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        """Unbind ``role`` from the group on the tenant; not bound is success."""
