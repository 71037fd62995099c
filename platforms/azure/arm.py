"""The ARM side of the Azure driver: the tenant's scope, role definitions and the role assignments
on the scope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from platforms.azure.calls import AzureCalls
from platforms.azure.names import odata_string, role_guid

if TYPE_CHECKING:
    from platforms.contract import TenantRef


class AzureArm(AzureCalls):
    """The tenant's ARM scope and its role assignments."""

    def _setup(self) -> None:
        super()._setup()
        """Casefolded lookup key -> users (empty: asked, nobody): the per-instance lookup cache."""
        self._spellings: dict[tuple[str, str], str] = {}
        """(tenant key, role GUID) -> the role string the inventory uses, so observe reports an
        assignment as the plan spells it."""
        self._granted: dict[tuple[str, str, str], str] = {}
        """(scope, group id, role GUID) -> the spelling this instance granted it under: a revoke of
        the same role definition under another spelling is not carried out."""

    def _subscription(self, tenant: TenantRef) -> str:
        if self.options.scope == "resourceGroup":
            assert self.options.subscription_id is not None  # the options validator checks it
            return self.options.subscription_id
        return tenant.local_id

    def _scope(self, tenant: TenantRef) -> str:
        """The tenant's ARM id."""
        if self.options.scope == "resourceGroup":
            return f"/subscriptions/{self._subscription(tenant)}/resourceGroups/{tenant.local_id}"
        return f"/subscriptions/{tenant.local_id}"

    def _role_definition_id(self, tenant: TenantRef, role: str) -> str:
        """The role definition as ARM wants it for the tenant's scope: by its GUID under the tenant's
        subscription (as ``az role assignment create`` does), whatever path the inventory wrote."""
        return (
            f"/subscriptions/{self._subscription(tenant)}/providers/Microsoft.Authorization/"
            f"roleDefinitions/{role_guid(role)}"
        )

    def _spell(self, tenant: TenantRef, role_definition_id: str) -> str:
        guid = role_guid(role_definition_id)
        return self._spellings.get((tenant.key, guid), guid)

    async def _assignments(self, tenant: TenantRef, group_id: str) -> list[Any]:
        """Every role assignment of the group on exactly the tenant's scope (ARM lists inherited ones
        from above and ones below as well: left out)."""
        scope = self._scope(tenant)
        filter_ = f"principalId eq {odata_string(group_id)}"
        holder: dict[str, Any] = {}

        def step(client: Any) -> tuple[list[Any], bool]:
            """One page (one request); True while ARM names a next page."""
            if "pages" not in holder:
                holder["pages"] = client.role_assignments.list_for_scope(scope, filter=filter_).by_page()
            pages = holder["pages"]
            items = list(next(pages))
            return items, bool(getattr(pages, "continuation_token", None))

        rows: list[Any] = []
        subscription = self._subscription(tenant)
        more = True
        while more:
            page, more = await self._arm_call("list_role_assignments", subscription, step)
            rows.extend(page)
        return [
            r
            for r in rows
            if (r.scope or "").lower() == scope.lower() and (r.principal_id or "").lower() == group_id.lower()
        ]

    async def _scope_assignments(self, tenant: TenantRef) -> dict[str, list[Any]]:
        """Every role assignment on exactly the tenant's scope, by lower-case principal id: ONE list
        of the scope (``$filter=atScope()``: at the scope or above it, every page followed; the
        ones above are inherited, not the tenant's, and left out) for all groups of an observe."""
        scope = self._scope(tenant)
        holder: dict[str, Any] = {}

        def step(client: Any) -> tuple[list[Any], bool]:
            """One page (one request); True while ARM names a next page."""
            if "pages" not in holder:
                holder["pages"] = client.role_assignments.list_for_scope(scope, filter="atScope()").by_page()
            pages = holder["pages"]
            items = list(next(pages))
            return items, bool(getattr(pages, "continuation_token", None))

        subscription = self._subscription(tenant)
        by_principal: dict[str, list[Any]] = {}
        more = True
        while more:
            page, more = await self._arm_call("list_role_assignments", subscription, step)
            for r in page:
                if (r.scope or "").lower() == scope.lower() and r.principal_id:
                    by_principal.setdefault(str(r.principal_id).lower(), []).append(r)
        return by_principal
