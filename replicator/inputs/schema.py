"""JSON Schema of the config file, generated from the config models and each driver's options
model (field descriptions come from the attribute docstrings)."""

from __future__ import annotations

from typing import Any

from platforms.contract import PLATFORM_TYPES
from platforms.registry import DRIVERS
from replicator.core.config import Config


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the config, with each driver's block under its platform type."""
    schema = Config.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    props = defs["PlatformConfig"].setdefault("properties", {})
    for type_name in PLATFORM_TYPES:
        spec = DRIVERS.get(type_name)
        if spec is None:
            props[type_name] = {"type": "object", "description": f"{type_name}: no driver in this version"}
            continue
        model = spec.load().options_model
        sub = model.model_json_schema(by_alias=True)
        defs.update(sub.pop("$defs", {}))
        defs[model.__name__] = sub
        props[type_name] = {"$ref": f"#/$defs/{model.__name__}"}
    return schema
