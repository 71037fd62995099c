"""The PATCH dialects of real provisioning clients, rewritten to RFC 7644 before the body is
validated. What scim2-models' policy already tolerates (operation names in any case, booleans as
strings, a ``remove`` whose value selects members) is not repeated here.

- **Entra ID sends the enterprise extension's ``manager`` as a bare string**: its attribute
  mapping maps ``manager`` to a reference, and the provisioning service sends the referenced id
  itself as the value, ``{"op": "Add", "path": "urn:...:enterprise:2.0:User:manager", "value":
  "<id>"}``, or as the key of a path-less ``value`` object; RFC 7643 4.3 makes ``manager`` a
  complex attribute whose ``value`` is that id. Refusing it (400) stops Entra provisioning the
  user. Known issues of Entra's SCIM client: learn.microsoft.com, "Known issues and resolutions
  with SCIM 2.0 protocol compliance of the Microsoft Entra user provisioning service"
  (entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility).
"""

from __future__ import annotations

from typing import Any

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_MANAGER = {"manager", f"{ENTERPRISE}:manager".lower()}


def rfc_patch(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (a PatchOp) with the dialects above rewritten; anything else as it came."""
    operations = body.get("Operations")
    if not isinstance(operations, list):
        return body
    return {**body, "Operations": [_operation(op) for op in operations]}


def _operation(op: Any) -> Any:
    if not isinstance(op, dict):
        return op
    path, value = op.get("path"), op.get("value")
    if isinstance(path, str) and path.strip().lower() in _MANAGER and isinstance(value, str):
        return {**op, "value": {"value": value}}
    if path is None and isinstance(value, dict):
        fixed = dict(value)
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in _MANAGER and isinstance(item, str):
                fixed[key] = {"value": item}
            elif key == ENTERPRISE and isinstance(item, dict) and isinstance(item.get("manager"), str):
                fixed[key] = {**item, "manager": {"value": item["manager"]}}
        return {**op, "value": fixed}
    return op
