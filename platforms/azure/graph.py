"""The Microsoft Graph reads of the Azure driver: users, groups, members."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from platforms.azure.calls import AzureCalls
from platforms.azure.names import FILTER_MAX_DISPLAY_NAME, batches, mail_nickname, odata_string
from platforms.contract import PlatformUser, TenantRef
from platforms.kit.errors import NotFoundError
from platforms.kit.ownership import is_marked_for


@dataclass(frozen=True)
class EntraGroup:
    """A group as Graph lists it: what the ownership check needs."""

    id: str
    name: str
    description: str


class AzureGraph(AzureCalls):
    """Graph reads, shared by observe and apply."""

    async def _lookup(self, attribute: str, values: Sequence[str], guests_only: bool) -> list[Any]:
        from msgraph.generated.users.users_request_builder import UsersRequestBuilder

        select = ["id", "mail", "userPrincipalName"] + (["userType"] if guests_only else [])
        expression = f"{attribute} in ({', '.join(odata_string(v) for v in values)})"
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter=expression, select=select, top=999
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.users.get(request_configuration=RequestConfiguration(query_parameters=query))

        rows = await self._graph_pages(
            "list_guests" if guests_only else "list_users", first, lambda c: c.users
        )
        if guests_only:
            rows = [r for r in rows if (r.user_type or "").lower() == "guest"]
        return rows

    async def _users_with_address(self, address: str) -> list[Any]:
        """Every user (member or guest) the address belongs to: as ``mail``, as one of
        ``otherMails`` or as ``userPrincipalName``. Graph refuses to invite an address of a member
        of the directory (only external users are invited), so this is asked before inviting."""
        from msgraph.generated.users.users_request_builder import UsersRequestBuilder

        literal = odata_string(address)
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter=f"mail eq {literal} or userPrincipalName eq {literal} or otherMails/any(m:m eq {literal})",
            select=["id", "mail", "userPrincipalName", "userType"],
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.users.get(request_configuration=RequestConfiguration(query_parameters=query))

        return await self._graph_pages("find_user", first, lambda c: c.users)

    def _platform_user(self, row: Any, attribute: str) -> PlatformUser:
        value = row.mail if attribute == "mail" else row.user_principal_name
        return PlatformUser(id=str(row.id), name=str(value or row.id))

    async def _get_group(self, group_id: str) -> EntraGroup | None:
        from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder

        query = GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
            select=["id", "displayName", "description"]
        )

        async def call(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.groups.by_group_id(group_id).get(
                request_configuration=RequestConfiguration(query_parameters=query)
            )

        try:
            row = await self._graph_call("get_group", call)
        except NotFoundError:
            return None
        return EntraGroup(str(row.id), str(row.display_name or ""), str(row.description or ""))

    async def _groups_by_id(self, group_ids: Sequence[str]) -> dict[str, EntraGroup]:
        """The groups among ``group_ids`` that exist, by lower-case id: ``GET /groups?$filter=id in
        (...)`` with at most 15 ids a request (every page followed). A group deleted by hand is
        simply not listed (as ``get_group`` would answer 404); its description (our marker) comes
        with it, so one request replaces a ``get_group`` per group."""
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder

        found: dict[str, EntraGroup] = {}
        wanted = sorted({gid.lower() for gid in group_ids})
        for batch in batches(wanted):
            query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                filter=f"id in ({', '.join(odata_string(gid) for gid in batch)})",
                select=["id", "displayName", "description"],
            )

            async def first(client: Any, query: Any = query) -> Any:
                from kiota_abstractions.base_request_configuration import RequestConfiguration

                return await client.groups.get(
                    request_configuration=RequestConfiguration(query_parameters=query)
                )

            for r in await self._graph_pages("list_groups", first, lambda c: c.groups):
                if str(r.id).lower() in batch:
                    found[str(r.id).lower()] = EntraGroup(
                        str(r.id), str(r.display_name or ""), str(r.description or "")
                    )
        return found

    async def _groups_named(self, name: str) -> list[EntraGroup]:
        """The groups whose displayName is exactly ``name``. Graph's ``$filter`` takes displayName
        values of at most 120 characters (a longer one is 400 Request_UnsupportedQuery, although a
        name may have 256): a longer name is looked up by the mailNickname it was created with
        (derived from the name, at most 64 characters) and compared exactly here."""
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder

        if len(name) > FILTER_MAX_DISPLAY_NAME:
            expression = f"mailNickname eq {odata_string(mail_nickname(name))}"
        else:
            expression = f"displayName eq {odata_string(name)}"
        query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
            filter=expression, select=["id", "displayName", "description"]
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.groups.get(request_configuration=RequestConfiguration(query_parameters=query))

        rows = await self._graph_pages("find_group", first, lambda c: c.groups)
        return [
            EntraGroup(str(r.id), str(r.display_name or ""), str(r.description or ""))
            for r in rows
            if r.display_name == name
        ]

    async def _group_by_name(self, name: str, tenant: TenantRef) -> EntraGroup | None:
        """The group named ``name``: the one marked for ``tenant`` when several share the name."""
        groups = await self._groups_named(name)
        ours = [g for g in groups if is_marked_for(g.description, tenant)]
        candidates = ours or groups
        return candidates[0] if candidates else None

    async def _members(self, group_id: str) -> list[PlatformUser]:
        from msgraph.generated.groups.item.members.members_request_builder import MembersRequestBuilder

        query = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(
            select=["id", "mail", "userPrincipalName"], top=self.options.page_size
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.groups.by_group_id(group_id).members.get(
                request_configuration=RequestConfiguration(query_parameters=query)
            )

        rows = await self._graph_pages(
            "list_members", first, lambda c: c.groups.by_group_id(group_id).members
        )
        attribute = self.options.lookup_attribute
        members = []
        for row in rows:
            # Nested groups, devices, service principals: reported under their id, so the removal
            # policy takes them out like any member the replicator did not add.
            value = getattr(row, "mail" if attribute == "mail" else "user_principal_name", None)
            members.append(PlatformUser(id=str(row.id), name=str(value or row.id)))
        return members
