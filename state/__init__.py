"""The replicator's memory: owned groups, runs, audit trail, warnings, the lookup cache, stored
meshObjects and API keys."""

from state.store import (
    ApiKeyRecord,
    AuditRecord,
    ObjectOwnedError,
    ObjectWrite,
    OwnedGroupRecord,
    RunRecord,
    SourceSyncRecord,
    Store,
    StoredObject,
    StoreError,
    TenantRecord,
    WarningRecord,
)

__all__ = [
    "ApiKeyRecord",
    "AuditRecord",
    "ObjectOwnedError",
    "ObjectWrite",
    "OwnedGroupRecord",
    "RunRecord",
    "SourceSyncRecord",
    "Store",
    "StoreError",
    "StoredObject",
    "TenantRecord",
    "WarningRecord",
]
