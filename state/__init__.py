"""The replicator's memory: owned groups, runs, audit trail, warnings and the lookup cache."""

from state.store import (
    AuditRecord,
    OwnedGroupRecord,
    RunRecord,
    Store,
    StoreError,
    TenantRecord,
    WarningRecord,
)

__all__ = [
    "AuditRecord",
    "OwnedGroupRecord",
    "RunRecord",
    "Store",
    "StoreError",
    "TenantRecord",
    "WarningRecord",
]
