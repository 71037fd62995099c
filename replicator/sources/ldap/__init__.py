"""The LDAP connector: a directory read periodically into meshUsers and meshUserGroups.

``directory`` reads every user under ``userBase`` (and every group under ``groupBase`` when set)
with the RFC 2696 paged results control: the whole directory, or a ``SyncError``. ``mapping`` maps
the entries to meshObjects and leaves out, with the reason, those that cannot be written (bad
name, euid taken, owned elsewhere, defined in a file); they never block the others. ``sync``
writes the result through ``replicator.sources.stored.apply`` under the source ``ldap:<name>``,
only after a complete read, and deprovisions the users and deletes the groups no longer read; it
holds the lease ``ldap-sync:<name>`` so that one replica at a time syncs a connector.
"""

from replicator.sources.ldap.directory import render_value
from replicator.sources.ldap.sync import SyncResult, lease_name, sync, sync_with_lease

__all__ = ["SyncResult", "lease_name", "render_value", "sync", "sync_with_lease"]
