"""How every config block reads (``OPTIONS_CONFIG``), and the field descriptions of its JSON Schema.

Pydantic model plumbing only (stdlib + pydantic): the driver option models and the config models
outside ``platforms`` use it, and importing it loads no driver.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import textwrap
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict
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
    fields: Mapping[str, Any] = getattr(cls, "model_fields", {})
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
