"""Users of the customer, looked up through the Admin SDK directory (never created).

``users.get`` of an email outside the customer's domains answers 403 "Not Authorized to access
this resource/api" (reason ``forbidden``), not 404, and a missing Admin SDK permission answers the
very same. The driver tells the two apart by asking once more, within the customer:
``users.list`` with ``query=email:'<euid>'``. That answers (no user) when the caller may read the
directory, so the 403 meant "not one of ours": the user is not found (``USER_NOT_FOUND``) and the
rest of the lookup goes on; a 403 again is the missing permission, a permanent error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from platforms.contract import PlatformUser
from platforms.gcp.calls import GcpCalls
from platforms.gcp.errors import BadRequestError, ForbiddenError
from platforms.gcp.records import user_record
from platforms.kit.errors import NotFoundError

_USER_PAGE = 500  # the most the Admin SDK allows


class GcpUsers(GcpCalls):
    """``lookup_users`` of :class:`~platforms.gcp.driver.GcpDriver`."""

    def _setup(self) -> None:
        super()._setup()
        self._users: dict[str, tuple[PlatformUser, ...]] = {}
        self._directory_listed = False
        self._lookup_lock = asyncio.Lock()

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

    async def _lookup_email(self, euid: str) -> tuple[PlatformUser, ...]:
        try:
            item = await self._call("admin", "users.get", lambda s: s.users().get(userKey=euid))
        except (NotFoundError, BadRequestError):  # 400 "Invalid Input": the key is no email at all
            return ()
        except ForbiddenError:  # outside the customer's domains, or no permission at all
            return await self._search_email(euid)
        user = user_record(item)
        # users.get also answers for an alias: only the primary email matches.
        return (user,) if user.id == euid.lower() else ()

    async def _search_email(self, euid: str) -> tuple[PlatformUser, ...]:
        """The user with primary email ``euid`` among the customer's users (a ForbiddenError when
        the caller may not read them: the permission is missing)."""
        rows = await self._search("email", euid)
        return tuple(sorted({u for u in map(user_record, rows) if u.id == euid.lower()}))

    async def _search(self, field: str, value: str) -> list[dict[str, Any]]:
        """The customer's users whose ``field`` is ``value`` (Directory API search syntax,
        the value quoted and escaped)."""
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        return await self._pages(
            "admin",
            "users.list",
            "users",
            lambda s, t: s.users().list(
                customer=self.options.customer_id,
                query=f"{field}:'{quoted}'",
                maxResults=_USER_PAGE,
                projection="basic",
                pageToken=t,
            ),
        )

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
            user = user_record(row)
            index.setdefault(user.id, []).append(user)
        self._users = {key: tuple(sorted(users)) for key, users in index.items()}
        self._directory_listed = True

    async def _lookup_external_id(self, euid: str) -> tuple[PlatformUser, ...]:
        rows = await self._search("externalId", euid)
        found: dict[str, PlatformUser] = {}
        for row in rows:
            for ext in row.get("externalIds") or []:
                spelled = str(ext.get("value") or "")
                if spelled.casefold() == euid.casefold():
                    found[str(row["primaryEmail"]).lower()] = PlatformUser(
                        id=str(row["primaryEmail"]).lower(), name=spelled
                    )
        return tuple(sorted(found.values()))
