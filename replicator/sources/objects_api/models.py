"""The shapes of the meshObject API's answers, as pydantic models: the OpenAPI document of the
daemon is generated from them (``replicator.service.openapi``), and the API's tests check every
answer against that document."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from replicator.core.inventory import KINDS, MeshObject


class Answer(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_attribute_docstrings=True)


class Error(Answer):
    """Every answer other than 2xx and 422: what went wrong, in one sentence."""

    error: str


class Problem(Answer):
    """One problem of a request or of the inventory it would produce, located as a file's."""

    file: str
    """``request`` for the request body, else the inventory file."""
    line: int | None
    object: str | None
    field: str | None
    message: str


class Problems(Answer):
    """422: every problem (up to 1,000; ``more`` counts the rest); nothing was written."""

    errors: list[Problem]
    more: int = 0


class Item(Answer):
    """One meshObject and where it comes from."""

    kind: str = Field(json_schema_extra={"enum": list(KINDS)})
    key: str | None
    source: str
    """``file``, ``api``, ``oidc:<name>``, ``ldap:<name>`` or ``scim``."""
    read_only: bool
    """Defined in an inventory file (change it there)."""
    file: str = ""
    line: int | None = None
    revision: int = 0
    external_id: str | None = None
    deprovisioned_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    updated_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    object: MeshObject


class Items(Answer):
    items: list[Item]


class ObjectRef(Answer):
    kind: str
    key: str


class WriteResult(Answer):
    """200 to a write: which objects were created, updated or left as they were, and the store's
    objects revision after the write."""

    created: list[ObjectRef]
    updated: list[ObjectRef]
    unchanged: list[ObjectRef]
    revision: int = 0


ANSWERS: tuple[type[Answer], ...] = (Error, Problems, Items, Item, WriteResult)
"""The models the OpenAPI document names (the others are reached from these)."""
