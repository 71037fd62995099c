"""Config settings from the environment: ``REPLICATOR_<PATH>`` variables override keys of the
config file (a container's usual way to set one value without a new file)."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

NOT_OVERRIDES = frozenset({"REPLICATOR_CONFIG", "REPLICATOR_URL", "REPLICATOR_API_KEY"})
"""The command line's own variables: the config file, and the daemon address and API key of
``replicator resync``. Set in the same shell as every other command, they override no key."""


def apply_env_overrides(data: dict[str, Any], environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """``REPLICATOR_<PATH>`` overrides a config key: ``__`` separates levels, ``SNAKE_CASE`` becomes
    camelCase (``REPLICATOR_SCHEDULE__INTERVAL=5m``, ``REPLICATOR_REPLICATION__MAX_DELETIONS=10``).
    Values are read as YAML scalars."""
    return with_overrides(data, environ)[0]


def with_overrides(
    data: dict[str, Any], environ: os._Environ[str] | dict[str, str]
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """:func:`apply_env_overrides`, and which variable set which key path (so that a problem
    with the value names the variable, not a line of the file)."""
    overridden: dict[tuple[str, ...], str] = {}
    out = dict(data)
    for name, raw in sorted(environ.items()):
        if (
            not name.startswith("REPLICATOR_")
            or name in NOT_OVERRIDES
            or name.startswith("REPLICATOR_KEY_")
            or _SERVICE_LINK.match(name)
        ):
            continue
        keys = [_camel(k) for k in name[len("REPLICATOR_") :].split("__") if k]
        if not keys:
            continue
        target = out
        for k in keys[:-1]:
            child = target.get(k)
            child = dict(child) if isinstance(child, dict) else {}
            target[k] = child
            target = child
        try:
            target[keys[-1]] = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            target[keys[-1]] = raw
        overridden[tuple(keys)] = name
    return out, overridden


def overriding(loc: tuple[Any, ...], overridden: dict[tuple[str, ...], str]) -> str | None:
    """The variable that set the config key at ``loc`` (or a key above it), or None."""
    for n in range(len(loc), 0, -1):
        name = overridden.get(tuple(str(k) for k in loc[:n]))
        if name is not None:
            return name
    return None


_SERVICE_LINK = re.compile(
    r"^REPLICATOR_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)$"
)
"""Variables Kubernetes injects for a Service named ``replicator...`` (``REPLICATOR_SERVICE_HOST``,
``REPLICATOR_PORT_8080_TCP_ADDR``, ...): not config overrides."""


def _camel(snake: str) -> str:
    head, *rest = snake.lower().split("_")
    return head + "".join(w.capitalize() for w in rest)
