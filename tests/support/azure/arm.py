"""Azure Resource Manager's role assignments of the local Azure server.

Behaviour modelled on purpose (each with its source):

- A principal created a moment ago is unknown to ARM for seconds to minutes: ``PUT`` of a role
  assignment answers 400 ``PrincipalNotFound`` (MicrosoftDocs/azure-docs,
  articles/role-based-access-control/troubleshooting.md, "Assigning a role to a new principal
  sometimes fails"). Here for ``server.arm_lag`` seconds after its creation (None: ``lag``);
  ``catch_up()`` ends it. For a service principal the documented remedy is ``principalType:
  ServicePrincipal``, which makes ARM skip the directory lookup (modelled: no lag for it); for
  users and groups the remedy is to wait.
- ``principalType`` must name the principal's real type: a wrong one is 400
  ``UnmatchedPrincipalType`` "The PrincipalId '...' has type 'Group' , which is different from
  specified PrinciaplType 'User'." (ARM's text, typo included, as reported e.g. in
  Azure/azure-dev#3581); left out, ARM looks the principal up itself.
- A second assignment of the same role to the same principal on a scope is 409
  ``RoleAssignmentExists``; changing an existing assignment's principal or role is 409
  ``RoleAssignmentUpdateNotPermitted`` (role-assignments-rest, "Create").
- A list with ``$filter=principalId eq '...'`` returns assignments at, above and below the scope;
  ``$filter=atScope()`` at the scope and above it (role-assignments-list-rest).
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any
from urllib.parse import quote, urlencode

from tests.support.azure.errors import arm_error

ASSIGNMENTS = "/providers/Microsoft.Authorization/roleAssignments"
DEFINITIONS = "/providers/Microsoft.Authorization/roleDefinitions"
SCOPE = r"(/subscriptions/[^/]+(?:/resourceGroups/[^/]+)?)"
_LITERAL = r"'(?:[^']|'')*'"


class ArmApi:
    """The ARM routes; mixed into AzureServer (``state``, ``lag``, ``arm_lag``, ``arm_page_size``)."""

    state: Any
    lag: float
    arm_lag: float | None
    arm_page_size: int
    url: str
    tenant_id: str

    def _arm_visible(self, object_id: str) -> bool:
        """False while ARM does not know a principal created ``arm_lag`` seconds ago."""
        created = self.state.created.get(object_id)
        lag = self.lag if self.arm_lag is None else self.arm_lag
        return created is None or time.monotonic() >= created + lag

    def _principal_type(self, principal: str) -> str | None:
        if principal in self.state.groups:
            return "Group"
        if principal in self.state.users:
            return "User"
        return None

    def _arm(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if not query.get("api-version"):
            raise arm_error(400, "MissingApiVersionParameter", "The api-version parameter is required.")
        m = re.fullmatch(rf"{SCOPE}{ASSIGNMENTS}/([^/]+)", path, re.I)
        if m:
            scope, name = m.group(1), m.group(2)
            key = f"{scope}{ASSIGNMENTS}/{name}".lower()
            if method == "PUT":
                return self._create(scope, name, key, (body or {}).get("properties") or {})
            if method == "GET":
                if key not in self.state.assignments:
                    raise arm_error(404, "RoleAssignmentNotFound", "The role assignment does not exist.")
                return 200, self.state.assignments[key], {}
            if method == "DELETE":
                existing = self.state.assignments.pop(key, None)
                return (200, existing, {}) if existing is not None else (204, None, {})
        m = re.fullmatch(rf"{SCOPE}{ASSIGNMENTS}", path, re.I)
        if m and method == "GET":
            return 200, self._list(m.group(0), m.group(1).lower(), query), {}
        raise arm_error(404, "NotFound", f"no route {method} {path}")

    def _create(
        self, scope: str, name: str, key: str, props: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        principal = str(props.get("principalId") or "")
        given = props.get("principalType")
        actual = self._principal_type(principal)
        skip_lookup = given == "ServicePrincipal"  # the documented remedy for new service principals
        if not skip_lookup and (actual is None or not self._arm_visible(principal)):
            raise arm_error(
                400,
                "PrincipalNotFound",
                f"Principal {principal.replace('-', '')} does not exist in the directory "
                f"{self.tenant_id}. Check that you have the correct principal ID. If you are creating "
                "this principal and then immediately assigning a role, this error might be related "
                "to a replication delay. In this case, set the role assignment principalType "
                "property to a value, such as ServicePrincipal, User, or Group.",
            )
        if given is not None and actual is not None and given != actual:
            raise arm_error(
                400,
                "UnmatchedPrincipalType",
                f"The PrincipalId '{principal.replace('-', '')}' has type '{actual}' , which is "
                f"different from specified PrinciaplType '{given}'.",
            )
        existing = self.state.assignments.get(key)
        if existing is not None:
            same = (
                existing["properties"]["principalId"] == principal
                and existing["properties"]["roleDefinitionId"].lower()
                == str(props.get("roleDefinitionId")).lower()
            )
            if not same:
                raise arm_error(
                    409,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope cannot be updated.",
                )
            return 201, existing, {}
        return 201, self._put_assignment(scope, name, {**props, "principalType": given or actual}), {}

    def _list(self, path: str, scope: str, query: dict[str, str]) -> dict[str, Any]:
        principal = None
        at_scope = False  # atScope(): at the scope or above it (not below), like ARM
        if query.get("$filter"):
            fm = re.fullmatch(rf"\s*principalId\s+eq\s+({_LITERAL})\s*", query["$filter"])
            if fm:
                principal = fm.group(1)[1:-1].replace("''", "'")
            elif re.fullmatch(r"\s*atScope\(\)\s*", query["$filter"]):
                at_scope = True
            else:
                raise arm_error(400, "InvalidFilter", f"unsupported $filter {query['$filter']!r}")
        rows = [
            a
            for a in self.state.assignments.values()
            if (principal is None or a["properties"]["principalId"] == principal)
            and (
                scope.startswith(a["properties"]["scope"].lower() + "/")
                or a["properties"]["scope"].lower() == scope
                or (not at_scope and a["properties"]["scope"].lower().startswith(scope + "/"))
            )
        ]
        rows.sort(key=lambda a: a["id"])
        start = int(query.get("$skiptoken") or 0)
        page: dict[str, Any] = {"value": rows[start : start + self.arm_page_size]}
        if start + self.arm_page_size < len(rows):
            following = dict(query)
            following["$skiptoken"] = str(start + self.arm_page_size)
            page["nextLink"] = f"{self.url}{path}?{urlencode(following, quote_via=quote)}"
        return page

    def _put_assignment(self, scope: str, name: str, props: dict[str, Any]) -> dict[str, Any]:
        role = str(props.get("roleDefinitionId") or "")
        if not re.fullmatch(r".*/providers/Microsoft\.Authorization/roleDefinitions/[0-9a-fA-F-]{36}", role):
            raise arm_error(400, "InvalidRoleDefinitionId", f"The role definition ID '{role}' is not valid.")
        principal = str(props.get("principalId"))
        guid = role.rsplit("/", 1)[-1].lower()
        for other in self.state.assignments.values():
            p = other["properties"]
            if (
                p["principalId"] == principal
                and p["scope"].lower() == scope.lower()
                and p["roleDefinitionId"].rsplit("/", 1)[-1].lower() == guid
            ):
                raise arm_error(409, "RoleAssignmentExists", "The role assignment already exists.")
        assignment_id = f"{scope}{ASSIGNMENTS}/{name}"
        row = {
            "id": assignment_id,
            "name": name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": role,
                "principalId": principal,
                "principalType": props.get("principalType") or "Group",
                "scope": scope,
                "description": props.get("description"),
                "createdOn": datetime.datetime.now(datetime.UTC).isoformat(),
            },
        }
        self.state.assignments[assignment_id.lower()] = row
        return row
