"""What every driver shares: the base driver, the error types, the ownership marker, the group scan
of marked directories, paging, and the HTTP helpers (Retry-After, TLS).

The contract's error types (what the engine decides on) are re-exported by
:mod:`platforms.kit.errors` with the kit's own (``NotFoundError``, ``ConflictError``); this
package names only the kit's.

Stdlib, pydantic and the contract only: no SDK is imported here.
"""

from platforms.kit.driver import BaseDriver
from platforms.kit.errors import ConflictError, NotFoundError, error_for_status
from platforms.kit.http import Headers, parse_retry_after, retry_after, tls_verify
from platforms.kit.ownership import (
    OWNER_MARKER,
    MarkedGroup,
    adoptable,
    create_or_adopt,
    delete_marked_group,
    is_marked,
    is_marked_for,
    owner_marker,
)
from platforms.kit.paging import Pages
from platforms.kit.scan import GoneSinceScan, GroupScan, observe_marked_groups
from platforms.kit.session import SharedClient
from platforms.kit.users import UserIndex

__all__ = [
    "OWNER_MARKER",
    "BaseDriver",
    "ConflictError",
    "GoneSinceScan",
    "GroupScan",
    "Headers",
    "MarkedGroup",
    "NotFoundError",
    "Pages",
    "SharedClient",
    "UserIndex",
    "adoptable",
    "create_or_adopt",
    "delete_marked_group",
    "error_for_status",
    "is_marked",
    "is_marked_for",
    "observe_marked_groups",
    "owner_marker",
    "parse_retry_after",
    "retry_after",
    "tls_verify",
]
