"""Structured logs: JSON lines when stderr is not a terminal (containers, CI), console lines
otherwise. A processor masks every value whose key looks like a secret."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"secret|password|token|credential|authorization|api[_-]?key", re.IGNORECASE)
_NOT_SECRET = frozenset({"lease_token"})
"""Keys that look secret and are not: a lease's fencing token is a counter, not a credential."""
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never let a secret reach a log line: mask secret-looking keys and passwords in URLs."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key) and value not in (None, "") and key not in _NOT_SECRET:
            event[key] = "***"
        elif isinstance(value, str) and "://" in value:
            event[key] = _URL_PASSWORD.sub(r"\1***@", value)
    return event


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Set up structlog for the process; log lines go to stderr. ``fmt`` is json, console or auto:
    JSON lines unless stderr is a terminal: a container gets JSON, a person gets console lines."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info if use_json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # Resolve sys.stderr at each write, not at configure time (it may be replaced meanwhile).
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "replicator") -> Any:
    return structlog.get_logger(name)
