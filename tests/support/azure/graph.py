"""Microsoft Graph v1.0 of the local Azure server: users, groups, members, invitations, with the
real service's visibility rules, value limits and replication lag.

Behaviour modelled on purpose (each with its source):

- Replication lag: Entra ID is eventually consistent across replicas; an object created a moment
  ago may be missing from ``GET /groups/{id}``, from ``$filter`` queries and from lists for a while,
  and a request that refers to it may answer 404 ``Request_ResourceNotFound``
  (MicrosoftDocs/SupportArticles-docs, "404-not-found-error-manage-objects-microsoft-graph.md":
  "the object was just created ... replication delay"). ``POST /groups/{id}/members/$ref`` on a
  just-created group or with a just-created member answers 404 or 400 for a while
  (microsoftgraph/microsoft-graph-docs-contrib, api-reference group-post-members.md). Here an
  object created through the API is invisible to Graph reads and references for ``server.lag``
  seconds (``catch_up()`` ends every lag at once); the 400 body for an unknown member is the
  "do not exist" text Graph gives for unresolvable references (its exact wording for the
  lag case is not documented: the status and code are what the docs state).
- ``$filter`` on ``displayName`` takes string values of at most 120 characters; a longer one is
  400 ``Request_UnsupportedQuery`` "Unsupported or invalid query filter clause specified for
  property 'displayName' of resource 'Group'" (microsoftgraph/msgraph-sdk-dotnet#159 for ``eq``,
  microsoftgraph/microsoft-graph-explorer-v4#2103 for ``startswith``), although a group's
  displayName may have 256 characters.
- ``in (...)`` takes at most 15 values (learn.microsoft.com/graph/filter-query-parameter).
- ``mailNickname``: "ASCII 0-127 except @ () \\ [] " ; : <> , SPACE", at most 64 characters
  (learn.microsoft.com/graph/api/resources/group, property mailNickname): anything else is 400.
- Invitations: an address that belongs to a member of the directory (its mail, one of its
  otherMails or its userPrincipalName) is refused with 400: only external users are invited
  (learn.microsoft.com/graph/api/invitation-post; the exact message text here is an assumption).
  An address invited before returns the existing guest.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from tests.support.azure.errors import graph_error

TENANT_DOMAIN = "workload.onmicrosoft.com"
GRAPH_MAX_IN = 15
FILTER_MAX_DISPLAY_NAME = 120
NICKNAME_REFUSED = re.compile(r"[^\x21-\x7e]|[@()\\\[\]\";:<>,]")

_LITERAL = r"'(?:[^']|'')*'"
_CLAUSES = (
    ("eq", re.compile(rf"(\w+)\s+eq\s+({_LITERAL})")),
    ("in", re.compile(rf"(\w+)\s+in\s+\(\s*({_LITERAL}(?:\s*,\s*{_LITERAL})*)\s*\)")),
    ("startswith", re.compile(rf"startswith\(\s*(\w+)\s*,\s*({_LITERAL})\s*\)", re.I)),
    ("any", re.compile(rf"(\w+)/any\(\s*(\w+)\s*:\s*\2\s+eq\s+({_LITERAL})\s*\)")),
)

Clause = tuple[str, str, list[str]]
"""(operator, attribute, values) of one filter clause."""


def _literal(text: str) -> str:
    return text[1:-1].replace("''", "'")


def _unsupported(expression: str) -> Exception:
    return graph_error(400, "Request_UnsupportedQuery", f"Unsupported query: {expression!r}")


def parse_filter(expression: str) -> list[Clause]:
    """``clause [or clause]...`` with clauses ``attr eq 'v'``, ``attr in ('a', 'b')``,
    ``startswith(attr, 'v')`` and ``attr/any(x:x eq 'v')``; anything else is a 400 like Graph's."""
    clauses: list[Clause] = []
    rest = expression.strip()
    while True:
        for op, pattern in _CLAUSES:
            m = pattern.match(rest)
            if m is None:
                continue
            if op == "any":
                clauses.append((op, m.group(1), [_literal(m.group(3))]))
            elif op == "in":
                values = [_literal(v) for v in re.findall(_LITERAL, m.group(2))]
                if len(values) > GRAPH_MAX_IN:
                    raise graph_error(
                        400,
                        "Request_UnsupportedQuery",
                        "Too many child clauses specified in search filter expression containing 'OR' "
                        f"operators: {len(values)}. Max allowed: {GRAPH_MAX_IN}.",
                    )
                clauses.append((op, m.group(1), values))
            else:
                clauses.append((op, m.group(1), [_literal(m.group(2))]))
            rest = rest[m.end() :].strip()
            break
        else:
            raise _unsupported(expression)
        if not rest:
            return clauses
        joined = re.match(r"or\s+", rest)
        if joined is None:
            raise _unsupported(expression)
        rest = rest[joined.end() :]


def _matches(row: dict[str, Any], clauses: list[Clause]) -> bool:
    """Graph compares these string properties case-insensitively."""
    for op, attribute, values in clauses:
        wanted = [v.lower() for v in values]
        if op == "any":
            if any(str(x).lower() in wanted for x in row.get(attribute) or ()):
                return True
            continue
        have = str(row.get(attribute) or "").lower()
        if op == "startswith" and have.startswith(wanted[0]):
            return True
        if op in ("eq", "in") and have in wanted:
            return True
    return False


class GraphApi:
    """The Graph routes; mixed into AzureServer (``state``, ``lag``, ``page_size``, ``url``)."""

    state: Any
    lag: float
    page_size: int
    url: str

    # --- visibility -----------------------------------------------------------------------------

    def _graph_visible(self, object_id: str) -> bool:
        """False while Entra ID's replicas do not all know an object created ``lag`` seconds ago."""
        created = self.state.created.get(object_id)
        return created is None or time.monotonic() >= created + self.lag

    def _visible_groups(self) -> list[dict[str, Any]]:
        return [g for g in self.state.groups.values() if self._graph_visible(g["id"])]

    def _visible_users(self) -> list[dict[str, Any]]:
        return [u for u in self.state.users.values() if self._graph_visible(u["id"])]

    # --- helpers --------------------------------------------------------------------------------

    def _page(self, path: str, query: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, Any]:
        import base64
        from urllib.parse import quote, urlencode

        top = min(int(query.get("$top") or self.page_size), self.page_size)
        start = int(base64.urlsafe_b64decode(query["$skiptoken"]).decode()) if "$skiptoken" in query else 0
        page: dict[str, Any] = {"value": rows[start : start + top]}
        if start + top < len(rows):
            following = dict(query)
            following["$skiptoken"] = base64.urlsafe_b64encode(str(start + top).encode()).decode()
            page["@odata.nextLink"] = f"{self.url}/v1.0{path}?{urlencode(following, quote_via=quote)}"
        return page

    @staticmethod
    def _select(row: dict[str, Any], query: dict[str, str], odata_type: str | None = None) -> dict[str, Any]:
        fields = [f.strip() for f in query.get("$select", "").split(",") if f.strip()]
        out = {k: row.get(k) for k in fields} if fields else dict(row)
        out["id"] = row["id"]
        if odata_type:
            out["@odata.type"] = odata_type
        return out

    @staticmethod
    def _filter(query: dict[str, str], resource: str, allowed: tuple[str, ...]) -> list[Clause] | None:
        if "$filter" not in query:
            return None
        clauses = parse_filter(query["$filter"])
        for op, attribute, values in clauses:
            if attribute not in allowed or (op == "any") != (attribute == "otherMails"):
                raise graph_error(
                    400, "Request_UnsupportedQuery", f"filter {op} on {attribute!r} is not supported"
                )
            if attribute == "displayName" and any(len(v) > FILTER_MAX_DISPLAY_NAME for v in values):
                raise graph_error(
                    400,
                    "Request_UnsupportedQuery",
                    "Unsupported or invalid query filter clause specified for property 'displayName' "
                    f"of resource '{resource}'.",
                )
        return clauses

    @staticmethod
    def _not_found(object_id: str) -> Exception:
        return graph_error(
            404,
            "Request_ResourceNotFound",
            f"Resource '{object_id}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )

    # --- routes ---------------------------------------------------------------------------------

    def _graph(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        st = self.state
        if path == "/users" and method == "GET":
            clauses = self._filter(query, "User", ("mail", "userPrincipalName", "otherMails"))
            rows = [u for u in self._visible_users() if clauses is None or _matches(u, clauses)]
            return 200, self._page(path, query, [self._select(u, query) for u in rows]), {}
        if path == "/groups" and method == "GET":
            clauses = self._filter(query, "Group", ("displayName", "id", "mailNickname"))
            rows = [g for g in self._visible_groups() if clauses is None or _matches(g, clauses)]
            return 200, self._page(path, query, [self._select(g, query) for g in rows]), {}
        if path == "/groups" and method == "POST":
            return 201, self._create_group(body), {}
        m = re.fullmatch(r"/directory/administrativeUnits/([^/]+)/members", path)
        if m and method == "POST":
            if body.get("@odata.type") != "#microsoft.graph.group":
                raise graph_error(400, "Request_BadRequest", "only groups are created here by this server")
            group = self._create_group(body)
            st.unit_members.setdefault(m.group(1), []).append(group["id"])
            return 201, group, {}
        m = re.fullmatch(r"/groups/([^/]+)", path)
        if m:
            gid = m.group(1)
            group = st.groups.get(gid)
            if group is None or (method == "GET" and not self._graph_visible(gid)):
                raise self._not_found(gid)
            if method == "GET":
                return 200, self._select(group, query), {}
            if method == "DELETE":
                del st.groups[gid]
                st.members.pop(gid, None)
                for ids in st.members.values():
                    if gid in ids:
                        ids.remove(gid)
                return 204, None, {}
        m = re.fullmatch(r"/groups/([^/]+)/members", path)
        if m and method == "GET":
            gid = m.group(1)
            if gid not in st.groups or not self._graph_visible(gid):
                raise self._not_found(gid)
            rows = []
            for mid in st.members[gid]:
                if mid in st.users:
                    rows.append(self._select(st.users[mid], query, "#microsoft.graph.user"))
                elif mid in st.groups:
                    rows.append(self._select(st.groups[mid], query, "#microsoft.graph.group"))
            return 200, self._page(path, query, rows), {}
        m = re.fullmatch(r"/groups/([^/]+)/members/\$ref", path)
        if m and method == "POST":
            return self._add_member(m.group(1), body)
        m = re.fullmatch(r"/groups/([^/]+)/members/([^/]+)/\$ref", path)
        if m and method == "DELETE":
            gid, mid = m.group(1), m.group(2)
            if gid not in st.groups or mid not in st.members[gid]:
                raise graph_error(404, "Request_ResourceNotFound", f"Resource '{mid}' does not exist.")
            st.members[gid].remove(mid)
            return 204, None, {}
        m = re.fullmatch(r"/users/([^/]+)", path)
        if m and method == "DELETE":
            # "When deleted, user resources ... are moved to a temporary container and if the user is
            # restored within 30 days, these objects are restored to them. The user is also restored
            # to any groups they were a member of" (Graph, Delete user, user-delete): out of every
            # group now, kept aside with them, gone from /users at once.
            uid = m.group(1)
            if uid not in st.users:
                raise self._not_found(uid)
            groups = [gid for gid, ids in st.members.items() if uid in ids]
            for gid in groups:
                st.members[gid].remove(uid)
            st.deleted_users[uid] = {**st.users.pop(uid), "memberOf": groups}
            return 204, None, {}
        if path == "/invitations" and method == "POST":
            return 201, self._invite(body), {}
        raise graph_error(400, "BadRequest", f"Resource not found for the segment in {method} {path}")

    def _add_member(self, gid: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        st = self.state
        ref = str((body or {}).get("@odata.id") or "")
        mid = ref.rstrip("/").rsplit("/", 1)[-1]
        if not re.fullmatch(r"https://[^/]+/v1\.0/directoryObjects/[^/]+", ref):
            raise graph_error(400, "Request_BadRequest", f"Invalid object reference {ref!r}")
        if gid not in st.groups or not self._graph_visible(gid):
            raise self._not_found(gid)  # the group a replica does not know (yet): 404
        if (mid not in st.groups and mid not in st.users) or not self._graph_visible(mid):
            # the member a replica does not know (yet): 400 (group-post-members; see the docstring)
            raise graph_error(
                400,
                "Request_BadRequest",
                "One or more added object references do not exist for the following modified "
                "properties: 'members'.",
            )
        if mid in st.members[gid]:
            raise graph_error(
                400,
                "Request_BadRequest",
                "One or more added object references already exist for the following modified "
                "properties: 'members'.",
            )
        st.members[gid].append(mid)
        return 204, None, {}

    def _create_group(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("displayName", "mailNickname", "mailEnabled", "securityEnabled"):
            if key not in body:
                raise graph_error(400, "Request_BadRequest", f"A value is required for property '{key}'.")
        nick = str(body["mailNickname"])
        if not nick or len(nick) > 64 or NICKNAME_REFUSED.search(nick):
            raise graph_error(
                400,
                "Request_BadRequest",
                "Invalid value specified for property 'mailNickname' of resource 'Group'.",
            )
        if len(str(body["displayName"])) > 256:
            raise graph_error(400, "Request_BadRequest", "Invalid value for property 'displayName'.")
        gid = str(uuid.uuid4())
        group = {
            "id": gid,
            "displayName": body["displayName"],
            "description": body.get("description"),
            "mailNickname": nick,
            "mailEnabled": bool(body["mailEnabled"]),
            "securityEnabled": bool(body["securityEnabled"]),
        }
        self.state.groups[gid] = group
        self.state.members[gid] = []
        self.state.created[gid] = time.monotonic()
        return dict(group)

    def _invite(self, body: dict[str, Any]) -> dict[str, Any]:
        address = str(body.get("invitedUserEmailAddress") or "")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
            raise graph_error(400, "BadRequest", "The invited user email address is invalid.")
        if not body.get("inviteRedirectUrl"):
            raise graph_error(400, "BadRequest", "InviteRedirectUrl is required.")
        key = address.lower()

        def owns(user: dict[str, Any]) -> bool:
            keys = [user.get("mail"), user.get("userPrincipalName"), *(user.get("otherMails") or ())]
            return key in {str(k).lower() for k in keys if k}

        member = next((u for u in self.state.users.values() if u["userType"] != "Guest" and owns(u)), None)
        if member is not None:
            raise graph_error(
                400,
                "BadRequest",
                "Non-external user already exists in the directory: the invited address belongs to "
                f"a member of this organization ({member['userPrincipalName']}).",
            )
        self.state.invitations.append(dict(body))
        existing = next((u for u in self.state.users.values() if (u["mail"] or "").lower() == key), None)
        if existing is None:
            uid = str(uuid.uuid4())
            existing = {
                "id": uid,
                "displayName": address.split("@")[0],
                "mail": address,
                "otherMails": [],
                "userPrincipalName": address.replace("@", "_") + "#EXT#@" + TENANT_DOMAIN,
                "userType": "Guest",
            }
            self.state.users[uid] = existing
            self.state.created[uid] = time.monotonic()
        return {
            "id": str(uuid.uuid4()),
            "invitedUserEmailAddress": address,
            "inviteRedirectUrl": body["inviteRedirectUrl"],
            "sendInvitationMessage": bool(body.get("sendInvitationMessage")),
            "status": "PendingAcceptance",
            "invitedUser": {"id": existing["id"]},
        }
