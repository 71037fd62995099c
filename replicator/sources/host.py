"""What an identity source needs from the process that serves it (the daemon): the loaded config
and inventory, the state store, and a way to say that stored objects changed. Sources depend on
this protocol, never on the daemon itself, so the daemon can import the sources and not the other
way round."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from replicator.inputs.validate import Validated
    from replicator.sources.apiauth import Caller
    from replicator.sources.stored import LoadedCache
    from state import Store


class SourceHost(Protocol):
    @property
    def config_path(self) -> Path:
        """The config file; stored objects are validated together with the files it names."""

    @property
    def validated(self) -> Validated | None:
        """The config and inventory last loaded without errors (None until one is)."""

    @property
    def store(self) -> Store | None:
        """The state store (None until a valid config named one)."""

    @property
    def loaded_cache(self) -> LoadedCache | None:
        """The inventory as this process last read or wrote it (see ``stored.LoadedCache``): a
        write is checked against it instead of reading every stored object again."""

    def objects_changed(self) -> None:
        """Stored objects were written: reload them and queue the tenants they change. Returns at
        once (the reload runs after); callable from a worker thread."""

    def identify(self, secret: str) -> Caller | None:
        """The API key a bearer secret belongs to, or None (blocking: may read the store)."""
