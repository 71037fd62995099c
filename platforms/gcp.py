"""Google Cloud driver: Cloud Identity groups, IAM policy bindings on projects.

A tenant is a GCP project (``localId`` = the project id). Groups are Cloud Identity groups of the
configured customer (``parent: customers/<customerId>``) whose email is the rendered name +
``@`` + ``domain``; they carry the label ``cloudidentity.googleapis.com/groups.discussion_forum``
(a plain Google Group) and our marker as description. A role is an IAM role name (``roles/editor``,
``projects/P/roles/X``, ``organizations/O/roles/X``) bound to ``group:<email>`` in the project's
IAM policy. Users are matched by ``primaryEmail`` (Admin SDK directory, case-insensitive), or with
``userLookupStrategy: externalId`` by one of their ``externalIds`` values; they are never created.
google-api-python-client and google-auth are imported lazily, inside methods, so importing this
module is cheap.

Every request goes through ``GcpDriver._call``: within the platform's budget, in a worker thread
(googleapiclient is synchronous; each thread has its own ``httplib2.Http``, which is not
thread-safe), counted in ``GcpDriver.api_calls`` under the discovery method name (one count per
request or page), errors mapped to the contract's types. googleapiclient's own retries are off
(``num_retries=0``): the engine retries a ``RetryableError`` after the Retry-After the platform
asked for, and that pause is shared by every worker through the budget instead of hidden in a
sleeping thread.

API calls per operation (names as counted; M members of a group, U users of the customer):

``lookup_users`` (email)
    ``users.get`` 1 per euid not seen before on this driver instance; when more than
    ``userListThreshold`` euids are unknown, ``users.list`` x ceil(U/500) once instead (the whole
    directory is indexed and every later lookup on the instance makes no call).
``lookup_users`` (externalId)
    ``users.list`` with ``query=externalId:'<euid>'`` 1 (x pages) per euid not seen before.
``observe`` (per tenant, once, when it has an owned group)
    ``projects.getIamPolicy`` 1 (``requestedPolicyVersion: 3``).
``observe`` (per owned group)
    ``groups.get`` 1 (a pending record without id: ``groups.lookup`` 1 + ``groups.get`` 1),
    ``groups.memberships.list`` x ceil(M/1000).
``observe`` (per desired name that no owned record has)
    ``groups.lookup`` 1, + ``groups.get`` 1 when the name is taken.
    A no-op observe of a tenant with G owned groups, without a scan: 2 G + 1 calls.
``prepare`` (once per run, when the run names >= ``groupScanThreshold`` groups)
    ``groups.list`` (``parent=customers/<customerId>``, ``view=FULL``: the description is the
    marker) x ceil(groups of the customer / 500), at most max(1, named groups // 2) pages, else
    no scan; observe then takes every ``groups.get``/``groups.lookup`` answer from the scan (a
    recorded id the scan lacks is still read with ``groups.get``, a name it lacks is free): a no-op
    observe of a tenant with G owned groups is G + 1 calls. A scanned group deleted since the scan
    (its ``groups.memberships.list`` answers 404) is forgotten and read again: ``groups.get`` 1
    (vanished) for a recorded id, nothing for a name (free).
``apply``
    create_group:  ``groups.lookup`` 1 (+ ``groups.get`` 1 if it exists), else ``groups.create`` 1
    add_member:    ``groups.memberships.create`` 1 (409 ALREADY_EXISTS: success)
    remove_member: ``groups.memberships.lookup`` 1 unless observe saw the membership, then
                   ``groups.memberships.delete`` 1 (404: success)
    grant/revoke:  ``projects.getIamPolicy`` 1, + ``projects.setIamPolicy`` 1 unless the binding is
                   already as wanted; a 409 (the policy changed since it was read: stale etag)
                   repeats both, at most ``policyAttempts`` times; + ``groups.get`` 1 when the
                   group's email is not known from observe or create
    delete_group:  ``groups.get`` 1 (id unknown: ``groups.lookup`` 1 + ``groups.get`` 1)
                   + ``groups.delete`` 1

Policy edits change only the ``group:<email>`` member of unconditional bindings of the role in
question: other members, other roles and every conditional binding are written back as read, and a
binding is dropped only when removing our group left it empty.

Ownership: every group this driver creates has the description ``"<OWNER_MARKER> tenant=<tenant
key>"``. A group recorded in the state store counts as ours when its description starts with the
marker; a group found only by name (crash leftover) counts as ours only when the marker also names
this tenant. (Cloud Identity accepts only its own label keys, so the marker cannot be a label.)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

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
from platforms.secrets import SecretRef

DISCUSSION_FORUM_LABEL = "cloudidentity.googleapis.com/groups.discussion_forum"
"""The label of a plain Google Group (Cloud Identity requires one label)."""

SCOPES: dict[str, tuple[str, ...]] = {
    "cloudidentity": ("https://www.googleapis.com/auth/cloud-identity.groups",),
    "admin": ("https://www.googleapis.com/auth/admin.directory.user.readonly",),
    "cloudresourcemanager": ("https://www.googleapis.com/auth/cloud-platform",),
}
_VERSIONS = {"cloudidentity": "v1", "admin": "directory_v1", "cloudresourcemanager": "v3"}
_MEMBERSHIP_PAGE = 1000  # the most Cloud Identity allows with view BASIC
_GROUP_PAGE = 500  # the most groups.list allows with view FULL (BASIC: 1000, but need not carry the marker)
_USER_PAGE = 500  # the most the Admin SDK allows

# The email local part of a Google group: lowercase letters, digits, - _ ' and single periods,
# not at either end (support.google.com/a/answer/9193374; 64 before the @, 63 keeps a margin).
_GROUP_NAME = re.compile(r"(?!\.)(?!.*\.\.)[a-z0-9_'.-]+(?<!\.)")
_ROLE = re.compile(
    r"roles/[A-Za-z0-9_.]+"
    r"|projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/roles/[A-Za-z0-9_.]{1,64}"
    r"|organizations/[0-9]+/roles/[A-Za-z0-9_.]{1,64}"
)


class GcpEndpoints(pydantic.BaseModel):
    """Where each API is called (null: Google's public endpoint); for emulators, private service
    connect or sovereign clouds."""

    model_config = OPTIONS_CONFIG

    cloudidentity: str | None = None
    """Base URL of the Cloud Identity API (default ``https://cloudidentity.googleapis.com/``)."""
    admin: str | None = None
    """Base URL of the Admin SDK (default ``https://admin.googleapis.com/``)."""
    cloudresourcemanager: str | None = None
    """Base URL of Resource Manager (default ``https://cloudresourcemanager.googleapis.com/``)."""

    def all_set(self) -> bool:
        return None not in (self.cloudidentity, self.admin, self.cloudresourcemanager)


class GcpOptions(pydantic.BaseModel):
    """The ``gcp:`` block of a platform in the config file."""

    model_config = OPTIONS_CONFIG

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


class _NotFoundError(PermanentError):
    """HTTP 404: callers that expect it catch it."""


class _BadRequestError(PermanentError):
    """HTTP 400 (INVALID_ARGUMENT, "Invalid Input")."""


class _ConflictError(PermanentError):
    """HTTP 409 (ALREADY_EXISTS, or ABORTED on a stale etag)."""


@dataclass(frozen=True)
class _Group:
    id: str
    """The resource name, ``groups/<id>``."""
    email: str
    description: str

    @property
    def name(self) -> str:
        return self.email.partition("@")[0]


def _group(item: Mapping[str, Any]) -> _Group:
    key = item.get("groupKey") or {}
    return _Group(str(item["name"]), str(key.get("id") or "").lower(), str(item.get("description") or ""))


def _user(item: Mapping[str, Any]) -> PlatformUser:
    email = str(item["primaryEmail"])
    return PlatformUser(id=email.lower(), name=email)


_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})


def _error(operation: str, exc: Any) -> PlatformError:
    """The contract error for a googleapiclient ``HttpError`` (no secret is ever in its text)."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    text = ""
    reasons: set[str] = set()
    try:
        body = json.loads(exc.content)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            text = " ".join(str(p) for p in (err.get("status"), err.get("message")) if p)
            reasons = {str(e.get("reason")) for e in err.get("errors") or [] if isinstance(e, dict)}
            if err.get("status") == "RESOURCE_EXHAUSTED":
                reasons.add("quotaExceeded")
    except (ValueError, TypeError):
        text = ""
    message = f"gcp {operation}: HTTP {status}" + (f": {text}" if text else "")
    if status == 404:
        return _NotFoundError(message)
    if status == 409:
        return _ConflictError(message)
    # The Admin SDK answers some rate limits with 403 and a reason instead of 429.
    if status in (408, 429) or status >= 500 or (status == 403 and reasons & _RATE_LIMIT_REASONS):
        wait: float | None = None
        retry_after = exc.resp.get("retry-after") if hasattr(exc.resp, "get") else None
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = None
        return RetryableError(message, retry_after=wait)
    if status == 400:
        return _BadRequestError(message)
    if status == 401:
        return PlatformConfigError(message)
    return PermanentError(message)


def _with_token(request: Callable[[Any, str | None], Any], token: str | None) -> Callable[[Any], Any]:
    return lambda service: request(service, token)


def _set_policy(resource: str, policy: dict[str, Any]) -> Callable[[Any], Any]:
    return lambda service: service.projects().setIamPolicy(resource=resource, body={"policy": policy})


def _member_key(email: str) -> str:
    return f"group:{email}"


def _bound_roles(policy: Mapping[str, Any], email: str) -> frozenset[str]:
    """Every role of an unconditional binding that names ``group:<email>``."""
    key = _member_key(email).casefold()
    return frozenset(
        str(b["role"])
        for b in policy.get("bindings") or []
        if not b.get("condition") and key in (str(m).casefold() for m in b.get("members") or [])
    )


def policy_with(policy: Mapping[str, Any], role: str, email: str, bound: bool) -> dict[str, Any] | None:
    """``policy`` with ``group:<email>`` bound to ``role`` (or not), or None when it already is.

    Only unconditional bindings of ``role`` change; a binding is dropped only when removing our
    member emptied it. Every other member, binding, condition and field is kept as read."""
    member = _member_key(email)
    key = member.casefold()
    out = copy.deepcopy(dict(policy))
    bindings: list[dict[str, Any]] = list(out.get("bindings") or [])
    ours = [b for b in bindings if b.get("role") == role and not b.get("condition")]
    has = any(key in (str(m).casefold() for m in b.get("members") or []) for b in ours)
    if has == bound:
        return None
    if bound:
        if ours:
            ours[0]["members"] = [*(ours[0].get("members") or []), member]
        else:
            bindings.append({"role": role, "members": [member]})
    else:
        kept: list[dict[str, Any]] = []
        for b in bindings:
            if any(b is o for o in ours):
                before = list(b.get("members") or [])
                b["members"] = [m for m in before if str(m).casefold() != key]
                if before and not b["members"]:
                    continue
            kept.append(b)
        bindings = kept
    out["bindings"] = bindings
    if any(b.get("condition") for b in bindings):
        out["version"] = 3
    return out


def _credentials_from_info(info: dict[str, Any], scopes: Sequence[str], where: str) -> Any:
    """google-auth credentials of the kinds a deployment uses, each by its own loader (the generic
    loader would accept any kind a file names)."""
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    if kind == "external_account":  # workload identity federation
        source = info.get("credential_source") or {}
        if "executable" in source:
            from google.auth import pluggable

            return pluggable.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
        if str(source.get("environment_id", "")).startswith("aws"):
            from google.auth import aws

            return aws.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
        from google.auth import identity_pool

        return identity_pool.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    raise PlatformConfigError(
        f"credentials in {where}: type {kind!r} is not one of service_account, external_account, "
        "authorized_user"
    )


class GcpDriver(Driver):
    """Cloud Identity groups of one customer, IAM policy bindings on projects."""

    options_model: ClassVar[type[pydantic.BaseModel]] = GcpOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="keep",
        lookup_attribute="primaryEmail",
        has_groups=True,
        group_name_prefix="",
        max_group_name_length=63,
        group_name_pattern=_GROUP_NAME,
        ensures_users=False,
        role_pattern=_ROLE,
        role_example="roles/editor",
    )

    options: GcpOptions

    def __init__(self, identifier: str, options: GcpOptions | Mapping[str, Any]) -> None:
        if not isinstance(options, GcpOptions):
            try:
                options = GcpOptions.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid gcp block: {exc}") from exc
        super().__init__(identifier, options)
        self.api_calls: Counter[str] = Counter()
        """Google API requests made by this driver, by discovery method name (one per request)."""
        self._count_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._local = threading.local()
        self._credentials: dict[str, Any] | None = None
        self._services: dict[str, Any] = {}
        self._https: list[Any] = []
        """Every worker thread's connections, closed by :meth:`close`."""
        self._users: dict[str, tuple[PlatformUser, ...]] = {}
        self._directory_listed = False
        self._lookup_lock = asyncio.Lock()
        self._emails: dict[str, str] = {}
        """Group resource name -> email, from every group this instance read or created."""
        self._memberships: dict[tuple[str, str], str] = {}
        """(group resource name, member email lowercase) -> membership resource name."""
        self._scan: GroupScan[_Group] | None = None
        """This run's ``groups.list`` scan, by resource name and email (None: read group by group)."""

    @classmethod
    def capabilities_for(cls, options: Any) -> Capabilities:
        """The lookup attribute follows ``userLookupStrategy``."""
        if isinstance(options, GcpOptions) and options.user_lookup_strategy == "externalId":
            return dataclasses.replace(cls.capabilities, lookup_attribute="externalIds")
        return cls.capabilities

    # --- plumbing -------------------------------------------------------------------------------

    def _count(self, operation: str) -> None:
        with self._count_lock:
            self.api_calls[operation] += 1

    def _load_credentials(self) -> dict[str, Any]:
        """Credentials per API (the Admin SDK may impersonate ``adminSubject``)."""
        import google.auth
        import google.auth.exceptions
        from google.auth.credentials import AnonymousCredentials

        opts = self.options
        if opts.anonymous:
            anon = AnonymousCredentials()  # type: ignore[no-untyped-call]
            return {api: anon for api in SCOPES}
        scopes = sorted({s for group in SCOPES.values() for s in group})
        source = opts.credentials_file
        try:
            if source is None:
                creds, _ = google.auth.default(scopes=scopes)
            else:
                if isinstance(source, SecretRef):
                    text = source.resolve()
                    where = f"{source.env or source.file}"
                else:
                    where = source
                    try:
                        text = Path(source).read_text()
                    except OSError as exc:
                        raise PlatformConfigError(
                            f"{self.identifier}: cannot read credentialsFile {source}: {exc.strerror or exc}"
                        ) from None
                try:
                    info = json.loads(text)
                except ValueError:
                    raise PlatformConfigError(
                        f"{self.identifier}: credentials in {where} are not JSON"
                    ) from None
                if not isinstance(info, dict):
                    raise PlatformConfigError(f"{self.identifier}: credentials in {where} are not an object")
                try:
                    creds = _credentials_from_info(info, scopes, where)
                except (ValueError, KeyError) as exc:  # the text could quote the key: name only the kind
                    raise PlatformConfigError(
                        f"{self.identifier}: credentials in {where} are not usable ({type(exc).__name__})"
                    ) from None
        except ValueError as exc:  # SecretRef.resolve names where the secret is, never its value
            raise PlatformConfigError(f"{self.identifier}: credentialsFile: {exc}") from None
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise PlatformConfigError(f"{self.identifier}: no usable Google credentials: {exc}") from None
        admin = creds
        if opts.admin_subject:
            if not hasattr(creds, "with_subject"):
                raise PlatformConfigError(
                    f"{self.identifier}: adminSubject needs service account credentials "
                    "(domain-wide delegation)"
                )
            admin = creds.with_subject(opts.admin_subject)
        return {"cloudidentity": creds, "admin": admin, "cloudresourcemanager": creds}

    def _service(self, api: str) -> Any:
        """The discovery client of ``api``, built once from the bundled document (no network)."""
        with self._build_lock:
            if self._credentials is None:
                self._credentials = self._load_credentials()
            if api not in self._services:
                from googleapiclient.discovery import build

                endpoint = getattr(self.options.endpoints, api)
                client_options = {"api_endpoint": endpoint} if endpoint else None
                self._services[api] = build(
                    api,
                    _VERSIONS[api],
                    credentials=self._credentials[api],
                    static_discovery=True,
                    cache_discovery=False,
                    client_options=client_options,
                )
            return self._services[api]

    def _http(self, api: str) -> Any:
        """This thread's authorised ``httplib2.Http`` for ``api`` (httplib2 is not thread-safe)."""
        per_thread: dict[str, Any] | None = getattr(self._local, "http", None)
        if per_thread is None:
            per_thread = self._local.http = {}
        if api not in per_thread:
            import google_auth_httplib2
            import httplib2

            assert self._credentials is not None
            per_thread[api] = google_auth_httplib2.AuthorizedHttp(
                self._credentials[api], http=httplib2.Http(timeout=self.options.timeout)
            )
            with self._build_lock:
                self._https.append(per_thread[api])
        return per_thread[api]

    def _call_sync(self, api: str, operation: str, request: Callable[[Any], Any]) -> Any:
        import google.auth.exceptions
        import httplib2
        from googleapiclient.errors import HttpError

        self._count(operation)
        try:
            service = self._service(api)
            return request(service).execute(http=self._http(api), num_retries=0)
        except PlatformError:
            raise
        except HttpError as exc:
            raise _error(operation, exc) from None
        except google.auth.exceptions.RefreshError as exc:
            raise PlatformConfigError(f"gcp {operation}: cannot obtain an access token: {exc}") from None
        except google.auth.exceptions.TransportError as exc:
            raise RetryableError(f"gcp {operation}: cannot reach the token endpoint: {exc}") from None
        except google.auth.exceptions.GoogleAuthError as exc:
            raise PlatformConfigError(f"gcp {operation}: credentials: {exc}") from None
        except (TimeoutError, ConnectionError, httplib2.HttpLib2Error) as exc:
            raise RetryableError(f"gcp {operation}: cannot reach {api}: {exc}") from None
        except OSError as exc:
            raise RetryableError(f"gcp {operation}: {api}: {exc}") from None

    async def _call(self, api: str, operation: str, request: Callable[[Any], Any]) -> Any:
        """One request in a worker thread, within the platform's budget: counted, errors mapped to
        the contract's types, a Retry-After shared through the budget."""
        async with self.budget:
            try:
                return await asyncio.to_thread(self._call_sync, api, operation, request)
            except RetryableError as exc:
                if exc.retry_after:
                    self.budget.pause(exc.retry_after)
                raise

    async def _pages(
        self, api: str, operation: str, key: str, request: Callable[[Any, str | None], Any]
    ) -> list[dict[str, Any]]:
        """Every item of a paged list (``nextPageToken`` followed to the end) or an error."""
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        token: str | None = None
        while True:
            page = await self._call(api, operation, _with_token(request, token)) or {}
            items.extend(page.get(key) or [])
            token = page.get("nextPageToken") or None
            if token is None:
                return items
            if token in seen:
                raise PermanentError(f"gcp {operation}: the server repeated a page token")
            seen.add(token)

    def _email(self, name: str) -> str:
        return f"{name}@{self.options.domain}".lower()

    # --- reads ----------------------------------------------------------------------------------

    async def _get_group(self, group_id: str) -> _Group | None:
        try:
            item = await self._call("cloudidentity", "groups.get", lambda s: s.groups().get(name=group_id))
        except _NotFoundError:
            return None
        group = _group(item)
        self._emails[group.id] = group.email
        return group

    async def _group_by_name(self, name: str) -> _Group | None:
        email = self._email(name)
        try:
            found = await self._call(
                "cloudidentity", "groups.lookup", lambda s: s.groups().lookup(groupKey_id=email)
            )
        except _NotFoundError:
            return None
        return await self._get_group(str(found["name"]))

    async def _group_email(self, group_id: str, name: str) -> str:
        if group_id not in self._emails:
            group = await self._get_group(group_id)
            if group is None:
                raise PermanentError(f"gcp: group {name!r} ({group_id}) does not exist")
        return self._emails[group_id]

    async def _members(self, group_id: str) -> frozenset[PlatformUser]:
        rows = await self._pages(
            "cloudidentity",
            "groups.memberships.list",
            "memberships",
            lambda s, t: (
                s.groups()
                .memberships()
                .list(parent=group_id, view="BASIC", pageSize=_MEMBERSHIP_PAGE, pageToken=t)
            ),
        )
        members: set[PlatformUser] = set()
        for row in rows:
            key = str((row.get("preferredMemberKey") or {}).get("id") or "")
            if not key:
                continue
            members.add(PlatformUser(id=key.lower(), name=key))
            if row.get("name"):
                self._memberships[(group_id, key.lower())] = str(row["name"])
        return frozenset(members)

    async def _policy(self, tenant: TenantRef, operation: str = "projects.getIamPolicy") -> dict[str, Any]:
        resource = f"projects/{tenant.local_id}"
        body = {"options": {"requestedPolicyVersion": 3}}
        try:
            policy = await self._call(
                "cloudresourcemanager",
                operation,
                lambda s: s.projects().getIamPolicy(resource=resource, body=body),
            )
        except _NotFoundError as exc:
            raise PermanentError(f"gcp: project {tenant.local_id!r} not found: {exc}") from None
        return dict(policy or {})

    async def _lookup_email(self, euid: str) -> tuple[PlatformUser, ...]:
        try:
            item = await self._call("admin", "users.get", lambda s: s.users().get(userKey=euid))
        except (_NotFoundError, _BadRequestError):  # 400 "Invalid Input": the key is no email at all
            return ()
        user = _user(item)
        # users.get also answers for an alias: only the primary email matches.
        return (user,) if user.id == euid.lower() else ()

    async def _directory(self) -> None:
        rows = await self._pages(
            "admin",
            "users.list",
            "users",
            lambda s, t: s.users().list(
                customer=self.options.customer_id, maxResults=_USER_PAGE, projection="basic", pageToken=t
            ),
        )
        index: dict[str, list[PlatformUser]] = {}
        for row in rows:
            user = _user(row)
            index.setdefault(user.id, []).append(user)
        self._users = {key: tuple(sorted(users)) for key, users in index.items()}
        self._directory_listed = True

    async def _lookup_external_id(self, euid: str) -> tuple[PlatformUser, ...]:
        value = euid.replace("\\", "\\\\").replace("'", "\\'")
        rows = await self._pages(
            "admin",
            "users.list",
            "users",
            lambda s, t: s.users().list(
                customer=self.options.customer_id,
                query=f"externalId:'{value}'",
                maxResults=_USER_PAGE,
                projection="basic",
                pageToken=t,
            ),
        )
        found: dict[str, PlatformUser] = {}
        for row in rows:
            for ext in row.get("externalIds") or []:
                spelled = str(ext.get("value") or "")
                if spelled.casefold() == euid.casefold():
                    found[str(row["primaryEmail"]).lower()] = PlatformUser(
                        id=str(row["primaryEmail"]).lower(), name=spelled
                    )
        return tuple(sorted(found.values()))

    # --- apply ----------------------------------------------------------------------------------

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        async def existing() -> str | None:
            group = await self._group_by_name(name)
            if group is None:
                return None
            if is_marked_for(group.description, tenant):
                return group.id
            raise ForeignObjectError(
                f"gcp create_group: a group {group.email!r} already exists and is not ours "
                f"({group.id}, for {tenant.key})"
            )

        found = await existing()
        if found is not None:
            return found
        email = self._email(name)
        body = {
            "groupKey": {"id": email},
            "parent": f"customers/{self.options.customer_id}",
            "displayName": name,
            "description": owner_marker(tenant),
            "labels": {DISCUSSION_FORUM_LABEL: ""},
        }
        try:
            op = await self._call(
                "cloudidentity",
                "groups.create",
                lambda s: s.groups().create(body=body, initialGroupConfig="EMPTY"),
            )
        except _ConflictError as exc:
            found = await existing()
            if found is not None:
                return found
            raise RetryableError(f"gcp create_group: conflict for {email!r}, but no such group yet") from exc
        if op.get("error"):
            raise PermanentError(f"gcp create_group {email}: {op['error'].get('message') or op['error']}")
        created = (op.get("response") or {}).get("name") if op.get("done") else None
        if created:
            self._emails[str(created)] = email
            return str(created)
        found = await existing()  # a long-running create: the group is there once lookup finds it
        if found is None:
            raise RetryableError(f"gcp create_group: {email!r} is still being created")
        return found

    async def _add_member(self, group_id: str, user: PlatformUser) -> None:
        body = {"preferredMemberKey": {"id": user.id}, "roles": [{"name": "MEMBER"}]}
        try:
            await self._call(
                "cloudidentity",
                "groups.memberships.create",
                lambda s: s.groups().memberships().create(parent=group_id, body=body),
            )
        except _ConflictError:  # ALREADY_EXISTS
            return
        except _NotFoundError as exc:
            raise PermanentError(f"gcp add_member {user.id} to {group_id}: {exc}") from None

    async def _remove_member(self, group_id: str, user: PlatformUser) -> None:
        key = (group_id, user.id.lower())
        name = self._memberships.get(key)
        if name is None:
            try:
                found = await self._call(
                    "cloudidentity",
                    "groups.memberships.lookup",
                    lambda s: s.groups().memberships().lookup(parent=group_id, memberKey_id=user.id),
                )
            except _NotFoundError:
                return
            name = str(found["name"])
        with contextlib.suppress(_NotFoundError):
            await self._call(
                "cloudidentity",
                "groups.memberships.delete",
                lambda s: s.groups().memberships().delete(name=name),
            )
        self._memberships.pop(key, None)

    async def _edit_policy(self, tenant: TenantRef, change: Change, group_id: str, bound: bool) -> None:
        role = str(change.role)
        email = await self._group_email(group_id, change.group)
        resource = f"projects/{tenant.local_id}"
        verb = "grant" if bound else "revoke"
        for _ in range(self.options.policy_attempts):
            policy = await self._policy(tenant)
            edited = policy_with(policy, role, email, bound)
            if edited is None:
                return
            try:
                await self._call(
                    "cloudresourcemanager",
                    "projects.setIamPolicy",
                    _set_policy(resource, edited),
                )
                return
            except _ConflictError:  # ABORTED: someone changed the policy since we read it
                continue
            except PermanentError as exc:
                raise PermanentError(f"gcp {verb} {role} for group:{email} on {resource}: {exc}") from None
        raise RetryableError(
            f"gcp {verb} {role} on {resource}: the policy kept changing under us "
            f"({self.options.policy_attempts} attempts)"
        )

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        if group_id is None:
            group = await self._group_by_name(name)
            if group is not None and not is_marked_for(group.description, tenant):
                raise ForeignObjectError(f"gcp delete_group: group {group.email!r} ({group.id}) is not ours")
        else:
            group = await self._get_group(group_id)
            if group is not None and not is_marked(group.description):
                raise ForeignObjectError(f"gcp delete_group: group {group.email!r} ({group.id}) is not ours")
        if group is None:
            return
        gid = group.id
        try:
            await self._call("cloudidentity", "groups.delete", lambda s: s.groups().delete(name=gid))
        except _NotFoundError:
            return

    # --- the contract ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        if not euids:
            return {}
        async with self._lookup_lock:
            unknown = sorted({e.casefold() for e in euids} - set(self._users))
            if self.options.user_lookup_strategy == "externalId":
                for key in unknown:
                    self._users[key] = await self._lookup_external_id(key)
            elif unknown and not self._directory_listed:
                if len(unknown) > self.options.user_list_threshold:
                    await self._directory()
                else:
                    found = await asyncio.gather(*(self._lookup_email(key) for key in unknown))
                    self._users.update(zip(unknown, found, strict=True))
            return {euid: self._users.get(euid.casefold(), ()) for euid in euids}

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        policy: dict[str, Any] | None = None
        policy_lock = asyncio.Lock()
        done: dict[tuple[str, str], ObservedGroup] = {}
        by_id: dict[str, _Group | None] = {}
        by_name: dict[str, _Group | None] = {}

        async def read_id(group_id: str) -> _Group | None:
            if group_id not in by_id:
                by_id[group_id] = await self._observed_by_id(group_id)
            return by_id[group_id]

        async def read_name(name: str) -> _Group | None:
            if name not in by_name:
                by_name[name] = await self._observed_by_name(name)
            return by_name[name]

        async def observe_one(group: _Group, alias: str) -> ObservedGroup:
            nonlocal policy
            if (group.id, alias) in done:  # observed before a group of the scan turned out gone
                return done[(group.id, alias)]
            async with policy_lock:  # one getIamPolicy per tenant, however many groups
                if policy is None:
                    policy = await self._policy(tenant)
            try:
                members = await self._members(group.id)
            except _NotFoundError:
                if self._scan is not None and self._scan.forget(group):
                    # asked again from the start: forget this group's answers, keep the others
                    for memo in (by_id, by_name):
                        for key in [k for k, g in memo.items() if g is group]:
                            del memo[key]
                    raise GoneSinceScan(group.id) from None
                raise
            observed = ObservedGroup(
                id=group.id,
                name=group.name,
                alias=alias,
                members=members,
                roles=_bound_roles(policy, group.email),
            )
            done[(group.id, alias)] = observed
            return observed

        return await observe_marked_groups(tenant, owned, desired_names, read_id, read_name, observe_one)

    async def prepare(self, groups: int) -> None:
        """One ``groups.list`` scan of the customer's groups for a run that names at least
        ``groupScanThreshold`` groups, abandoned once it has made ``groups // 2`` calls (a large
        customer and a small run: reading group by group is cheaper). An error leaves no scan (the
        engine logs it; observe reads group by group)."""
        self._scan = None
        threshold = self.options.group_scan_threshold
        if not threshold or groups < threshold:
            return
        limit = max(1, groups // 2)
        parent = f"customers/{self.options.customer_id}"
        found: list[_Group] = []
        seen: set[str] = set()
        token: str | None = None
        for _ in range(limit):
            page = (
                await self._call(
                    "cloudidentity",
                    "groups.list",
                    _with_token(
                        lambda s, t: s.groups().list(
                            parent=parent, view="FULL", pageSize=_GROUP_PAGE, pageToken=t
                        ),
                        token,
                    ),
                )
                or {}
            )
            try:
                found += [_group(item) for item in page.get("groups") or []]
            except (KeyError, TypeError, AttributeError):
                raise PermanentError("gcp groups.list: a group without name or groupKey") from None
            token = page.get("nextPageToken") or None
            if token is None:
                self._scan = GroupScan(found, lambda g: g.email)
                return
            if token in seen:
                return
            seen.add(token)

    def _scanned(self, group: _Group) -> _Group:
        self._emails[group.id] = group.email  # a later grant/revoke needs no groups.get
        return group

    async def _observed_by_id(self, group_id: str) -> _Group | None:
        """A recorded group: from this run's scan when it has the id (no call), else ``groups.get``
        (deleted, or created after the scan)."""
        if self._scan is not None and group_id in self._scan.by_id:
            return self._scanned(self._scan.by_id[group_id])
        return await self._get_group(group_id)

    async def _observed_by_name(self, name: str) -> _Group | None:
        """A group by name: from this run's scan (absent there: free; ``create_group`` asks Cloud
        Identity again before it creates), else ``groups.lookup`` + ``groups.get``."""
        if self._scan is not None:
            group = self._scan.by_key.get(self._email(name))
            return None if group is None else self._scanned(group)
        return await self._group_by_name(name)

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.ENSURE_USER:
            raise PermanentError("gcp ensure_user: users come from Cloud Identity, none are created")
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
            return None
        if group_id is None:
            raise PermanentError(f"gcp {action}: no platform id for group {change.group!r}")
        if action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"gcp {action}: change for {change.group!r} names no user")
            if action is Action.ADD_MEMBER:
                await self._add_member(group_id, change.user)
            else:
                await self._remove_member(group_id, change.user)
            return None
        if action in (Action.GRANT, Action.REVOKE):
            if not change.role:
                raise PermanentError(f"gcp {action}: change for {change.group!r} names no role")
            await self._edit_policy(tenant, change, group_id, bound=action is Action.GRANT)
            return None
        raise PermanentError(f"gcp: unknown action {action!r}")

    async def close(self) -> None:
        with self._build_lock:
            services, self._services = self._services, {}
            https, self._https = self._https, []
        for service in services.values():
            service.close()
        for http in https:
            http.close()
