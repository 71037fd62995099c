"""The replicator's memory: owned groups, tenants, runs, audit trail, warnings, leases, the lookup
cache and the users the replicator created, stored meshObjects, API keys, identity-source syncs
and SCIM resources.

``Store`` (``state/store.py``) is the one object callers use. ``state/db.py`` opens and migrates the
database; ``owned``, ``tenants``, ``runs``, ``leases``, ``lookups``, ``objects``, ``apikeys``, ``syncs``
and ``scim`` each hold one concern's records and the part of ``Store`` for them; ``tables`` the
tables, ``migrations`` their Alembic versions."""

from state.store import (
    ApiKeyRecord,
    AuditRecord,
    CreatedUserRecord,
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
    "CreatedUserRecord",
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
