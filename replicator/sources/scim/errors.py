"""Errors and JSON answers of the SCIM service provider: every answer has the media type
``application/scim+json``; an error answer has the SCIM error schema (``schemas`` names
``urn:ietf:params:scim:api:messages:2.0:Error``; ``status`` is the HTTP status as a string;
``detail``; ``scimType`` where one applies)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

MEDIA_TYPE = "application/scim+json"


class ScimError(Exception):
    """An answer in the SCIM error schema: the HTTP status, a detail for people and, where one
    applies, the ``scimType`` that names the kind of error for the client."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def json_answer(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def error_answer(e: ScimError, headers: dict[str, str] | None = None) -> Response:
    """``e`` as an answer (with ``headers``)."""
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(e.status),
        "detail": e.detail,
    }
    if e.scim_type:
        body["scimType"] = e.scim_type
    return json_answer(body, e.status, headers)


def from_exception(e: Exception) -> ScimError:
    """A scim2-models or pydantic error as a ScimError (400 with its scimType unless scim2-models
    says otherwise)."""
    from pydantic import ValidationError
    from scim2_models import Error, SCIMException

    if isinstance(e, SCIMException):
        err = e.to_error()
        return ScimError(err.status or 400, err.detail or str(e), err.scim_type)
    if isinstance(e, ValidationError):
        errors = Error.from_validation_errors(e)
        first = errors[0] if errors else Error(status=400, detail=str(e))
        detail = "; ".join(x.detail or "" for x in errors) or str(e)
        return ScimError(first.status or 400, detail, first.scim_type or "invalidValue")
    return ScimError(400, str(e), "invalidValue")
