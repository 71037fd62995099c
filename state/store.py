"""What the replicator remembers: owned groups, tenants, runs, the audit trail, warnings, leases,
quota shares, the lookup cache, stored meshObjects, API keys, identity-source syncs and SCIM resources.

``Store`` is the one object callers use. It is composed of one part per concern (the other modules
of ``state/``), each a subclass of ``state.db.Database``, so that all parts share the store's one
engine and its transactions.
"""

from __future__ import annotations

from state.apikeys import ApiKeyStore
from state.db import aware, maybe_aware, utcnow
from state.leases import LeaseStore
from state.lookups import LookupStore
from state.objects import ObjectStore
from state.owned import OwnedGroupStore
from state.quotas import QuotaStore
from state.runs import RunStore
from state.scim import ScimStore
from state.syncs import AssertionStore, SyncStore
from state.tenants import TenantStore

# The records, errors, tables and helpers state.store held before it was split by concern stay
# importable from here.
# isort: off
from state.apikeys import ApiKeyRecord as ApiKeyRecord
from state.lookups import CreatedUserRecord as CreatedUserRecord
from state.db import StoreError as StoreError
from state.objects import ObjectOwnedError as ObjectOwnedError
from state.objects import ObjectWrite as ObjectWrite
from state.objects import StoredObject as StoredObject
from state.owned import OwnedGroupRecord as OwnedGroupRecord
from state.runs import AuditRecord as AuditRecord
from state.runs import RunRecord as RunRecord
from state.runs import WarningRecord as WarningRecord
from state.scim import ScimResource as ScimResource
from state.syncs import SourceSyncRecord as SourceSyncRecord
from state.tenants import TenantRecord as TenantRecord
from state.db import _MIGRATIONS as _MIGRATIONS
from state.db import _sqlite_file_lock as _sqlite_file_lock
from state.db import _sqlite_pragmas as _sqlite_pragmas
from state.objects import _MEMORY_LOCK as _MEMORY_LOCK
from state.objects import _stored as _stored
from state.owned import _owned as _owned
from state.runs import _run as _run
from state.runs import _warning as _warning
from state.scim import _scim as _scim
from state.tables import ApiKeyRow as ApiKeyRow
from state.tables import AuditRow as AuditRow
from state.tables import CounterRow as CounterRow
from state.tables import LeaseRow as LeaseRow
from state.tables import LookupRow as LookupRow
from state.tables import MeshObjectRow as MeshObjectRow
from state.tables import OwnedGroupRow as OwnedGroupRow
from state.tables import QuotaShareRow as QuotaShareRow
from state.tables import RunRow as RunRow
from state.tables import ScimResourceRow as ScimResourceRow
from state.tables import SourceSyncRow as SourceSyncRow
from state.tables import TenantRow as TenantRow
from state.tables import WarningRow as WarningRow
# isort: on

_now, _aware, _maybe = utcnow, aware, maybe_aware


class Store(
    OwnedGroupStore,
    TenantStore,
    RunStore,
    LeaseStore,
    QuotaStore,
    LookupStore,
    ObjectStore,
    ApiKeyStore,
    SyncStore,
    AssertionStore,
    ScimStore,
):
    """The state store behind one SQLAlchemy URL: opening it creates or upgrades the schema to the
    newest migration; each method is one transaction."""
