"""AWS IAM Identity Center driver.

A tenant is an AWS account. Groups live in the Identity Center identity store; a role is a
permission set ARN assigned to a group on the account. Users come from the identity source
(they are matched by ``userName``, never created). boto3/botocore are imported lazily, inside
methods, so importing this module is cheap.

Every AWS call goes through ``AwsDriver._call``, which counts it in ``AwsDriver.api_calls`` by its
boto3 operation name (one count per request/page; retries made by botocore itself are not
counted there, but each is paid from the platform's budget after the call, so
``schedule.rateLimits`` holds for every request sent) and maps errors to the contract's error
types. Lists are paged by hand (``NextToken``, 100 items a page) so every page is one counted call.

API calls per operation (U users in the identity store, M members of a group, A assignments):

``lookup_users``
    ``list_users`` x ceil(U/100), once per driver instance (the case-insensitive index is kept);
    every later lookup on the same instance makes no call.
``observe`` (per owned group)
    ``describe_group`` 1 (a pending record without id: ``get_group_id`` 1 + ``describe_group`` 1),
    ``list_group_memberships`` x ceil(M/100),
    ``list_account_assignments_for_principal`` x ceil(A/100),
    ``describe_user`` once per member the ``list_users`` scan has not seen (memoised).
``observe`` (per desired name that no owned record has)
    ``get_group_id`` 1, plus ``describe_group`` 1 when the name is taken.
    A no-op observe of a tenant with G owned groups, after a lookup: 3 G calls.
``prepare`` (once per run, when the run names >= ``groupScanThreshold`` groups)
    ``list_groups`` x ceil(groups in the identity store / 100), at most (named groups // 2) pages;
    observe then takes every ``describe_group``/``get_group_id`` answer from the scan (an owned id
    the scan lacks is still described): a no-op observe is 2 G calls. A group of the scan that is
    deleted before observe reads its members (``list_group_memberships`` answers
    ResourceNotFoundException) is dropped from the scan and the tenant is observed again: the calls
    made so far are repeated, the failed read counts 1, and the group then costs ``describe_group``
    1 (vanished), or nothing when it was found by name (the name is free).
``apply``
    create_group:  ``get_group_id`` 1 (+ ``describe_group`` 1 if it exists), else ``create_group`` 1
    add_member:    ``get_group_membership_id`` 1 (+ ``create_group_membership`` 1)
    remove_member: ``get_group_membership_id`` 1 (+ ``delete_group_membership`` 1)
    grant:         ``list_account_assignments`` x pages, + ``create_account_assignment`` 1
                   + ``describe_account_assignment_creation_status`` per poll while IN_PROGRESS
    revoke:        ``list_account_assignments`` x pages, + ``delete_account_assignment`` 1
                   + ``describe_account_assignment_deletion_status`` per poll while IN_PROGRESS
    delete_group:  ``describe_group`` 1 + ``delete_group`` 1 (group id unknown: + ``get_group_id`` 1)
    ensure_user:   not supported (PermanentError, no call)
``assume_role`` (sts)
    once per credential lifetime, only with ``assumeRoleArn``.

Ownership: every group this driver creates has the description
``"<OWNER_MARKER> tenant=<tenant key>"``. A group recorded in the state store counts as ours when
its description starts with the marker; a group found only by name (crash leftover) counts as
ours only when the marker also names this tenant.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic

from platforms.contract import (
    OPTIONS_CONFIG,
    Action,
    Capabilities,
    Change,
    Driver,
    ForeignObjectError,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.kit import (
    GoneSinceScan,
    GroupScan,
    is_marked,
    is_marked_for,
    observe_marked_groups,
    owner_marker,
)

_PAGE_SIZE = 100
_SESSION_NAME = "replicator"

# The identity store's DisplayName pattern is [\p{L}\p{M}\p{S}\p{N}\p{P}\t\n\r \xa0\u3000]+. Python's
# `re` has no Unicode property classes, so this is its complement for assigned code points: it
# refuses control (Cc except \t\n\r), format (Cf), private-use (Co), surrogate (Cs) and separator
# (Zs/Zl/Zp except space, NBSP, U+3000) characters as of Unicode 14; unassigned code points pass.
_DISPLAY_NAME_PATTERN = re.compile(
    r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    r"\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\ud800-\uf8ff\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    r"\U000e0020-\U000e007f\U000f0000-\U000ffffd\U00100000-\U0010fffd]+"
)

# Error codes botocore's standard retry mode also treats as throttling.
_THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "MissingAuthenticationToken"}
)
# ServiceQuotaExceededException is a real quota (too many groups, ...) unless its message says the
# caller merely has too many requests or operations in flight.
_QUOTA_THROTTLE_WORDS = ("throttl", "rate", "too many", "concurrent", "in progress", "in-progress")


class AwsOptions(pydantic.BaseModel):
    """The ``aws:`` block of a platform in the config file."""

    model_config = OPTIONS_CONFIG

    region: str = pydantic.Field(min_length=1)
    """The region of the IAM Identity Center instance, e.g. ``eu-central-1``."""
    identity_store_id: str = pydantic.Field(min_length=1)
    """The identity store of the instance, e.g. ``d-1234567890``."""
    instance_arn: str = pydantic.Field(min_length=1)
    """The Identity Center instance, e.g. ``arn:aws:sso:::instance/ssoins-1234567890abcdef``."""
    assume_role_arn: str | None = None
    """A role to assume (with the credentials of the standard AWS chain) before every call; null
    uses the chain's credentials directly."""
    endpoint_url: str | None = None
    """Send every call to this endpoint instead of AWS (an emulator such as moto)."""
    max_attempts: int = pydantic.Field(default=5, ge=1)
    """Attempts per call in botocore's standard retry mode (1 = no retry)."""
    poll_interval: float = pydantic.Field(default=1.0, gt=0)
    """Seconds between two reads of an account assignment's creation or deletion status."""
    poll_timeout: float = pydantic.Field(default=120.0, gt=0)
    """Seconds to wait for an account assignment to finish before giving up (retryable)."""
    group_scan_threshold: int = pydantic.Field(default=20, ge=0)
    """A run whose observations name at least this many groups reads every group of the identity
    store first (``ListGroups``, 100 a page) instead of one ``DescribeGroup``/``GetGroupId`` per
    group; the scan stops (and observe reads group by group) once it has cost half as many calls as
    it would save. 0 = never scan."""


def _retry_attempts(response: Any) -> int:
    """How many times botocore repeated the request (``ResponseMetadata.RetryAttempts`` of an
    answer, error answers included; 0 when there was none, e.g. a connection that never answered)."""
    if not isinstance(response, dict):
        return 0
    attempts = (response.get("ResponseMetadata") or {}).get("RetryAttempts") or 0
    return attempts if isinstance(attempts, int) and attempts > 0 else 0


class _NotFoundError(PermanentError):
    """ResourceNotFoundException: callers that expect it catch it."""


class _ConflictError(PermanentError):
    """ConflictException that repeating will not fix (identity store uniqueness violation)."""


class _TransientConflictError(RetryableError):
    """ConflictException that AWS says to retry (concurrent modification, write not propagated)."""


_CONFLICTS = (_ConflictError, _TransientConflictError)


@dataclass(frozen=True)
class _Group:
    id: str
    name: str
    description: str


def _translate(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for a botocore exception, or None when ``exc`` is not one."""
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "Unknown")
        text = str(error.get("Message", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = (
            f"aws {operation}: {code}"
            + (f" (HTTP {status})" if status else "")
            + (f": {text}" if text else "")
        )
        if code == "ResourceNotFoundException":
            return _NotFoundError(message)
        if code == "ConflictException":
            reason = str(exc.response.get("Reason", "") or "")
            # sso-admin's ConflictException means "a previous write has not propagated yet: retry";
            # the identity store says why in Reason (UNIQUENESS_CONSTRAINT_VIOLATION is final).
            if reason == "UNIQUENESS_CONSTRAINT_VIOLATION":
                return _ConflictError(message)
            return _TransientConflictError(message)
        if code in _THROTTLING_CODES or code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return RetryableError(message)
        if code == "ServiceQuotaExceededException":
            if any(word in text.lower() for word in _QUOTA_THROTTLE_WORDS):
                return RetryableError(message)
            return PermanentError(message)
        if code in _CREDENTIAL_CODES:
            return PlatformConfigError(message)
        return PermanentError(message)
    if isinstance(exc, bce.SSLError):
        return PermanentError(f"aws {operation}: {exc}")
    if isinstance(exc, bce.HTTPClientError | bce.ConnectionError | bce.CredentialRetrievalError):
        return RetryableError(f"aws {operation}: {exc}")
    if isinstance(
        exc,
        bce.NoCredentialsError
        | bce.PartialCredentialsError
        | bce.ProfileNotFound
        | bce.UnknownCredentialError
        | bce.NoRegionError,
    ):
        return PlatformConfigError(f"aws {operation}: {exc}")
    if isinstance(exc, bce.BotoCoreError):
        return PermanentError(f"aws {operation}: {exc}")
    return None


class AwsDriver(Driver):
    """IAM Identity Center: groups in the identity store, permission sets assigned on accounts."""

    options_model: ClassVar[type[pydantic.BaseModel]] = AwsOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="keep",
        lookup_attribute="userName",
        has_groups=True,
        group_name_prefix="mst-",
        max_group_name_length=1024,
        group_name_pattern=_DISPLAY_NAME_PATTERN,
        # AWS writes permissionSet/...; moto writes instance/... for the same ARN: accept both.
        role_pattern=re.compile(
            r"arn:aws[a-z-]*:sso:::(?:permissionSet|instance)/ssoins-[A-Za-z0-9.-]+/ps-[A-Za-z0-9.-]+"
        ),
        role_example="arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-1234567890abcdef",
    )

    options: AwsOptions

    def __init__(self, identifier: str, options: AwsOptions | Mapping[str, Any]) -> None:
        if not isinstance(options, AwsOptions):
            try:
                options = AwsOptions.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid aws block: {exc}") from exc
        super().__init__(identifier, options)
        self.api_calls: Counter[str] = Counter()
        """AWS calls made by this driver, by boto3 operation name (one per request or page)."""
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._scan_lock = asyncio.Lock()
        self._users_by_key: dict[str, list[PlatformUser]] | None = None
        self._users_by_id: dict[str, PlatformUser] = {}
        self._scan: GroupScan[_Group] | None = None

    # --- plumbing -------------------------------------------------------------------------------

    def _count(self, operation: str) -> None:
        with self._count_lock:
            self.api_calls[operation] += 1

    def _client(self, service: str) -> Any:
        with self._clients_lock:
            if not self._clients:
                self._clients = self._make_clients()
            return self._clients[service]

    def _make_clients(self) -> dict[str, Any]:
        import boto3
        from botocore.config import Config

        opts = self.options
        config = Config(
            retries={"mode": "standard", "total_max_attempts": opts.max_attempts},
            user_agent_extra="replicator",
        )
        session = boto3.Session(region_name=opts.region)
        if opts.assume_role_arn:
            session = self._assumed_session(session, config, opts.assume_role_arn)
        return {
            service: session.client(
                service,
                region_name=opts.region,
                endpoint_url=opts.endpoint_url,
                config=config,
            )
            for service in ("identitystore", "sso-admin")
        }

    def _assumed_session(self, base: Any, config: Any, role_arn: str) -> Any:
        """A session whose credentials come from ``sts:AssumeRole`` and refresh before they expire."""
        import boto3
        import botocore.session
        from botocore.credentials import DeferredRefreshableCredentials

        opts = self.options
        sts = base.client("sts", region_name=opts.region, endpoint_url=opts.endpoint_url, config=config)

        def fetch() -> dict[str, str]:
            self._count("assume_role")
            try:
                response = sts.assume_role(RoleArn=role_arn, RoleSessionName=_SESSION_NAME)
            except Exception as exc:
                mapped = _translate("sts assume_role", exc)
                if mapped is None:
                    raise
                raise mapped from exc
            creds = response["Credentials"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        core = botocore.session.Session()
        # botocore has no public setter for a session's credentials; this is how boto3's own
        # assume-role providers hand refreshable credentials to a session.
        core._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
            refresh_using=fetch, method="sts-assume-role"
        )
        return boto3.Session(botocore_session=core, region_name=opts.region)

    def _call_sync(
        self, service: str, operation: str, params: dict[str, Any], retried: list[int]
    ) -> dict[str, Any]:
        self._count(operation)
        try:
            client = self._client(service)
            response: dict[str, Any] = getattr(client, operation)(**params)
        except PlatformError:
            raise
        except Exception as exc:
            retried[0] = _retry_attempts(getattr(exc, "response", None))
            mapped = _translate(operation, exc)
            if mapped is None:
                raise
            raise mapped from exc
        retried[0] = _retry_attempts(response)
        return response

    async def _call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """One AWS call in a worker thread, within the platform's budget: counted, errors mapped to
        the contract's types. botocore's standard retry mode backs off on throttling by itself; the
        requests it repeated were sent outside the budget, so each is paid for after the call (the
        budget's rate then holds over time: the 1,000-tenant bench sent 2% more than its 20 req/s
        before)."""
        retried = [0]
        try:
            async with self.budget:
                return await asyncio.to_thread(self._call_sync, service, operation, params, retried)
        finally:
            for _ in range(retried[0]):
                async with self.budget:
                    pass

    async def _pages(self, service: str, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list call (each page is one counted call)."""
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        token: str | None = None
        while True:
            extra = {"NextToken": token} if token else {}
            page = await self._call(service, operation, MaxResults=_PAGE_SIZE, **params, **extra)
            items.extend(page.get(key, []))
            token = page.get("NextToken")
            if not token:
                return items
            if token in seen:
                raise PermanentError(f"aws {operation}: the service repeated a pagination token")
            seen.add(token)

    # --- identity store reads -------------------------------------------------------------------

    async def _describe_group(self, group_id: str) -> _Group | None:
        try:
            resp = await self._call(
                "identitystore",
                "describe_group",
                IdentityStoreId=self.options.identity_store_id,
                GroupId=group_id,
            )
        except _NotFoundError:
            return None
        return _Group(resp["GroupId"], resp.get("DisplayName", ""), resp.get("Description") or "")

    async def _group_by_name(self, name: str) -> _Group | None:
        try:
            resp = await self._call(
                "identitystore",
                "get_group_id",
                IdentityStoreId=self.options.identity_store_id,
                AlternateIdentifier={
                    "UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": name}
                },
            )
        except _NotFoundError:
            return None
        return await self._describe_group(resp["GroupId"])

    async def _user_index(self) -> dict[str, list[PlatformUser]]:
        """userName casefolded -> users; built by one scan of the identity store per driver."""
        async with self._scan_lock:
            if self._users_by_key is None:
                raw = await self._pages(
                    "identitystore", "list_users", "Users", IdentityStoreId=self.options.identity_store_id
                )
                index: dict[str, list[PlatformUser]] = {}
                for item in raw:
                    user = PlatformUser(id=item["UserId"], name=item.get("UserName") or "")
                    self._users_by_id[user.id] = user
                    if user.name:
                        index.setdefault(user.name.casefold(), []).append(user)
                self._users_by_key = index
            return self._users_by_key

    def remember_users(self, users: Iterable[PlatformUser]) -> None:
        for user in users:
            self._users_by_id.setdefault(user.id, user)

    async def _user(self, user_id: str) -> PlatformUser:
        known = self._users_by_id.get(user_id)
        if known is not None:
            return known
        try:
            resp = await self._call(
                "identitystore",
                "describe_user",
                IdentityStoreId=self.options.identity_store_id,
                UserId=user_id,
            )
        except _NotFoundError:
            # moto keeps the memberships of a deleted user (AWS deletes them with the user).
            # Report the stale member under its id so the plan removes it.
            return PlatformUser(id=user_id, name=user_id)
        user = PlatformUser(id=resp["UserId"], name=resp.get("UserName") or user_id)
        self._users_by_id[user_id] = user
        return user

    async def _membership_id(self, group_id: str, user_id: str) -> str | None:
        try:
            resp = await self._call(
                "identitystore",
                "get_group_membership_id",
                IdentityStoreId=self.options.identity_store_id,
                GroupId=group_id,
                MemberId={"UserId": user_id},
            )
        except _NotFoundError:
            return None
        return str(resp["MembershipId"])

    async def _observe_group(self, tenant: TenantRef, group: _Group, alias: str) -> ObservedGroup:
        try:
            memberships = await self._pages(
                "identitystore",
                "list_group_memberships",
                "GroupMemberships",
                IdentityStoreId=self.options.identity_store_id,
                GroupId=group.id,
            )
        except _NotFoundError:
            # Only a group this observe took from the scan: one it described itself and that is
            # gone a moment later fails the observation, as before.
            if self._scan is not None and self._scan.forget(group):
                raise GoneSinceScan(group.id) from None
            raise
        members: set[PlatformUser] = set()
        for membership in memberships:
            user_id = (membership.get("MemberId") or {}).get("UserId")
            if user_id:
                members.add(await self._user(user_id))
        assignments = await self._pages(
            "sso-admin",
            "list_account_assignments_for_principal",
            "AccountAssignments",
            InstanceArn=self.options.instance_arn,
            PrincipalId=group.id,
            PrincipalType="GROUP",
            Filter={"AccountId": tenant.local_id},
        )
        roles = {
            a["PermissionSetArn"]
            for a in assignments
            if a.get("AccountId", tenant.local_id) == tenant.local_id and "PermissionSetArn" in a
        }
        return ObservedGroup(
            id=group.id, name=group.name, alias=alias, members=frozenset(members), roles=frozenset(roles)
        )

    # --- sso-admin assignments ------------------------------------------------------------------

    async def _has_assignment(self, tenant: TenantRef, role: str, group_id: str) -> bool:
        rows = await self._pages(
            "sso-admin",
            "list_account_assignments",
            "AccountAssignments",
            InstanceArn=self.options.instance_arn,
            AccountId=tenant.local_id,
            PermissionSetArn=role,
        )
        return any(r.get("PrincipalType") == "GROUP" and r.get("PrincipalId") == group_id for r in rows)

    async def _wait(self, operation: str, status: dict[str, Any], what: str) -> None:
        """Poll an account assignment request until it is done."""
        creating = operation == "describe_account_assignment_creation_status"
        request_key = (
            "AccountAssignmentCreationRequestId" if creating else "AccountAssignmentDeletionRequestId"
        )
        status_key = "AccountAssignmentCreationStatus" if creating else "AccountAssignmentDeletionStatus"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.poll_timeout
        while True:
            state = status.get("Status")
            if state == "SUCCEEDED":
                return
            if state == "FAILED":
                reason = status.get("FailureReason") or "no reason given"
                raise PermanentError(f"aws {what} failed: {reason}")
            request_id = status.get("RequestId")
            if not request_id:
                raise PermanentError(f"aws {what}: status {state!r} without a request id")
            if loop.time() >= deadline:
                raise RetryableError(
                    f"aws {what}: still {state} after {self.options.poll_timeout:g} s (request {request_id})"
                )
            await asyncio.sleep(self.options.poll_interval)
            resp = await self._call(
                "sso-admin", operation, InstanceArn=self.options.instance_arn, **{request_key: request_id}
            )
            status = resp.get(status_key) or {}

    def _assignment(self, tenant: TenantRef, role: str, group_id: str) -> dict[str, str]:
        return {
            "InstanceArn": self.options.instance_arn,
            "TargetId": tenant.local_id,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": role,
            "PrincipalType": "GROUP",
            "PrincipalId": group_id,
        }

    # --- apply ----------------------------------------------------------------------------------

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        async def existing() -> str | None:
            group = await self._group_by_name(name)
            if group is None:
                return None
            if is_marked_for(group.description, tenant):
                return group.id
            raise ForeignObjectError(
                f"aws create_group: a group named {name!r} already exists and is not ours "
                f"(id {group.id}, for {tenant.key})"
            )

        found = await existing()
        if found is not None:
            return found
        try:
            resp = await self._call(
                "identitystore",
                "create_group",
                IdentityStoreId=self.options.identity_store_id,
                DisplayName=name,
                Description=owner_marker(tenant),
            )
        except _CONFLICTS as exc:
            found = await existing()
            if found is not None:
                return found
            raise RetryableError(f"aws create_group: conflict for {name!r}, but no such group yet") from exc
        return str(resp["GroupId"])

    async def _add_member(self, group_id: str, user: PlatformUser) -> None:
        if await self._membership_id(group_id, user.id) is not None:
            return
        try:
            await self._call(
                "identitystore",
                "create_group_membership",
                IdentityStoreId=self.options.identity_store_id,
                GroupId=group_id,
                MemberId={"UserId": user.id},
            )
        except _CONFLICTS as exc:
            if await self._membership_id(group_id, user.id) is None:
                raise RetryableError(
                    f"aws create_group_membership: conflict for {user.name!r}, but no membership yet"
                ) from exc

    async def _remove_member(self, group_id: str, user: PlatformUser) -> None:
        membership_id = await self._membership_id(group_id, user.id)
        if membership_id is None:
            return
        try:
            await self._call(
                "identitystore",
                "delete_group_membership",
                IdentityStoreId=self.options.identity_store_id,
                MembershipId=membership_id,
            )
        except _NotFoundError:
            return

    async def _grant(self, tenant: TenantRef, role: str, group_id: str) -> None:
        # Checked first because moto stores a duplicate assignment as a second row.
        if await self._has_assignment(tenant, role, group_id):
            return
        try:
            resp = await self._call(
                "sso-admin", "create_account_assignment", **self._assignment(tenant, role, group_id)
            )
        except _CONFLICTS as exc:
            if await self._has_assignment(tenant, role, group_id):
                return
            raise RetryableError(
                f"aws create_account_assignment: conflict for {role}, not assigned yet"
            ) from exc
        await self._wait(
            "describe_account_assignment_creation_status",
            resp.get("AccountAssignmentCreationStatus") or {},
            f"create_account_assignment of {role} on {tenant.local_id}",
        )

    async def _revoke(self, tenant: TenantRef, role: str, group_id: str) -> None:
        if not await self._has_assignment(tenant, role, group_id):
            return
        try:
            resp = await self._call(
                "sso-admin", "delete_account_assignment", **self._assignment(tenant, role, group_id)
            )
        except _NotFoundError:
            return
        except _CONFLICTS as exc:
            if not await self._has_assignment(tenant, role, group_id):
                return
            raise RetryableError(
                f"aws delete_account_assignment: conflict for {role}, still assigned"
            ) from exc
        await self._wait(
            "describe_account_assignment_deletion_status",
            resp.get("AccountAssignmentDeletionStatus") or {},
            f"delete_account_assignment of {role} on {tenant.local_id}",
        )

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        if group_id is None:
            group = await self._group_by_name(name)
            if group is not None and not is_marked_for(group.description, tenant):
                raise ForeignObjectError(f"aws delete_group: group {name!r} ({group.id}) is not ours")
        else:
            group = await self._describe_group(group_id)
            if group is not None and not is_marked(group.description):
                raise ForeignObjectError(f"aws delete_group: group {name!r} ({group.id}) is not ours")
        if group is None:
            return
        try:
            await self._call(
                "identitystore",
                "delete_group",
                IdentityStoreId=self.options.identity_store_id,
                GroupId=group.id,
            )
        except _NotFoundError:
            return

    # --- the contract ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        if not euids:
            return {}
        index = await self._user_index()
        return {euid: tuple(sorted(index.get(euid.casefold(), ()))) for euid in euids}

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        async def observe_one(group: _Group, alias: str) -> ObservedGroup:
            return await self._observe_group(tenant, group, alias)

        return await observe_marked_groups(
            tenant, owned, desired_names, self._observed_by_id, self._observed_by_name, observe_one
        )

    async def prepare(self, groups: int) -> None:
        """One ``ListGroups`` scan of the identity store for a run that names at least
        ``groupScanThreshold`` groups, abandoned once it has made ``groups // 2`` calls (a large
        identity store and a small run: reading group by group is cheaper)."""
        self._scan = None
        threshold = self.options.group_scan_threshold
        if not threshold or groups < threshold:
            return
        limit = max(1, groups // 2)
        found: list[_Group] = []
        seen: set[str] = set()
        token: str | None = None
        for _ in range(limit):
            extra = {"NextToken": token} if token else {}
            page = await self._call(
                "identitystore",
                "list_groups",
                IdentityStoreId=self.options.identity_store_id,
                MaxResults=_PAGE_SIZE,
                **extra,
            )
            found += [
                _Group(g["GroupId"], g.get("DisplayName", ""), g.get("Description") or "")
                for g in page.get("Groups", [])
            ]
            token = page.get("NextToken")
            if not token:
                self._scan = GroupScan(found, lambda g: g.name)
                return
            if token in seen:
                return
            seen.add(token)

    async def _observed_by_id(self, group_id: str) -> _Group | None:
        """A recorded group: from this run's scan when it has the id (no call), else described."""
        if self._scan is not None and group_id in self._scan.by_id:
            return self._scan.by_id[group_id]
        return await self._describe_group(group_id)

    async def _observed_by_name(self, name: str) -> _Group | None:
        """A group by name: from this run's scan (absent there: free; ``create_group`` asks the
        identity store again before it creates), else ``GetGroupId`` + ``DescribeGroup``."""
        if self._scan is not None:
            return self._scan.by_key.get(name)
        return await self._group_by_name(name)

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.ENSURE_USER:
            raise PermanentError(
                "aws ensure_user: not supported, IAM Identity Center users come from its identity source"
            )
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
            return None
        if group_id is None:
            raise PermanentError(f"aws {action}: no platform id for group {change.group!r}")
        if action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"aws {action}: change for {change.group!r} names no user")
            if action is Action.ADD_MEMBER:
                await self._add_member(group_id, change.user)
            else:
                await self._remove_member(group_id, change.user)
            return None
        if action in (Action.GRANT, Action.REVOKE):
            if not change.role:
                raise PermanentError(f"aws {action}: change for {change.group!r} names no permission set")
            if action is Action.GRANT:
                await self._grant(tenant, change.role, group_id)
            else:
                await self._revoke(tenant, change.role, group_id)
            return None
        raise PermanentError(f"aws: unknown action {action!r}")

    async def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()
