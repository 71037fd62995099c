"""How every config block reads (``OPTIONS_CONFIG``), the field descriptions of its JSON Schema,
and the one way a block names a secret (``SecretRef``: never a literal, always ``{env: NAME}`` or
``{file: PATH}``).

Pydantic model plumbing only (stdlib + pydantic): the driver option models and the config models
outside ``platforms`` use it, and importing it loads no driver.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it, for ``cls`` and its bases (the nearest wins).
    Read from the source only when a schema is generated, not when the class is built: pydantic's
    ``use_attribute_docstrings`` parses the source of every config class at import, about 0.2 s of
    every CLI start."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ in ("builtins", "pydantic.main"):
            continue
        docs.update(_own_attribute_docs(klass))
    return docs


@functools.cache
def _own_attribute_docs(klass: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):  # no source (frozen, interactive): no descriptions
        return {}
    body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _describe_fields(schema: dict[str, Any], cls: type) -> None:
    """``json_schema_extra`` of every config block: each property without a description gets the
    docstring of its field."""
    # a model's fields, or a pydantic dataclass's
    fields: Mapping[str, Any] = getattr(cls, "model_fields", None) or getattr(cls, "__pydantic_fields__", {})
    properties = schema.get("properties") or {}
    for name, doc in attribute_docs(cls).items():
        info = fields.get(name)
        key = (info.alias or name) if info is not None else name
        prop = properties.get(key)
        if isinstance(prop, dict) and not prop.get("description"):
            prop["description"] = doc


OPTIONS_CONFIG = ConfigDict(
    alias_generator=to_camel,
    populate_by_name=True,
    extra="forbid",
    json_schema_extra=_describe_fields,
    frozen=True,
)
"""How every config block reads: camelCase keys, unknown keys are errors, immutable, and each
field's docstring is its description in ``replicator schema``."""


class Options(BaseModel):
    """Base of every config block (a driver's options, the config file's sections): reads as
    :data:`OPTIONS_CONFIG` says."""

    model_config = OPTIONS_CONFIG


class SecretRef(Options):
    """A secret named by an environment variable or a file, exactly one of the two."""

    env: str | None = None
    """Name of the environment variable holding the secret."""
    file: str | None = None
    """Path of a file holding the secret (trailing newline stripped)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret is {env: NAME} or {file: PATH}, exactly one of the two")
        return self

    def resolve(self) -> str:
        """The secret's value; ValueError when it is unset, unreadable or empty."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
        else:
            assert self.file is not None
            try:
                value = Path(self.file).read_text().rstrip("\r\n")
            except OSError as e:
                raise ValueError(f"cannot read secret file {self.file}: {e.strerror or e}") from e
        if not value:
            raise ValueError(f"the secret in {self.env or self.file} is empty")
        return value
