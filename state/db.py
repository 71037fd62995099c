"""The database under the store: engine and sessions for one SQLAlchemy URL, the differences
between SQLite and PostgreSQL, the schema migrations run on open, and the store's one error type.

SQLite is the embedded default, PostgreSQL the shared store for several replicas. The schema is
created and upgraded by Alembic migrations when the store opens. Every write is one transaction.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK_ID = 7210551
"""The PostgreSQL advisory lock replicas opening one database take turns through to migrate it."""

CHUNK = 500
"""Keys per ``IN (...)`` query: SQLite allows a limited number of bound parameters per statement."""

T = TypeVar("T")


class StoreError(Exception):
    """The state store cannot be opened or written."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def maybe_aware(dt: datetime | None) -> datetime | None:
    return aware(dt) if dt is not None else None


R = TypeVar("R", bound="DataclassInstance")


def record_of(cls: type[R], row: object, **given: object) -> R:
    """The frozen record ``cls`` (a dataclass) of a table row: each field read from the row's
    column of the same name, a datetime made aware (SQLite hands back naive ones); ``given``
    fields are taken as they are (a converted column)."""
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        value = getattr(row, f.name)
        values[f.name] = aware(value) if isinstance(value, datetime) else value
    return cls(**values)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


@contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive ``flock`` on the file ``path`` (created if missing), held for the block: how
    processes sharing one SQLite file take turns."""
    import fcntl  # POSIX only: imported when a SQLite file is locked, not when the store is

    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclasses.dataclass
class _Open:
    """The transaction :meth:`Database.transaction` holds open in this thread."""

    db: Database
    session: Session
    after: list[Callable[[], None]]


_CURRENT: ContextVar[_Open | None] = ContextVar("state_transaction", default=None)


class Database:
    """An open database behind one SQLAlchemy URL, migrated to the newest schema; the base of each
    part of ``Store``, which all share its engine and its transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
                parsed = parsed.set(drivername="postgresql+psycopg")
            memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")
            # The daemon calls the store from worker threads. A SQLite file: SQLAlchemy's pool of
            # connections opened with check_same_thread=False (its default for files). An in-memory
            # database exists once per connection: one connection for every thread (StaticPool),
            # its transactions taken in turns (the lock below).
            extra = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}} if memory else {}
            self.engine: Engine = create_engine(parsed, future=True, pool_pre_ping=True, **extra)
        except (SQLAlchemyError, ValueError, ImportError) as e:
            raise StoreError(f"cannot open the state store {self.safe_url}: {e}") from e
        self._turns: AbstractContextManager[object] = threading.RLock() if memory else nullcontext()
        """Held around each transaction of an in-memory database (one connection for all threads)."""
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.migrate()

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparseable url>"

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with _sqlite_file_lock(self.engine), self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    # Replicas starting together on an empty database would race to create the
                    # same tables: one migrates, the others wait here and then find nothing to do.
                    conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK_ID})"))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as e:
            raise StoreError(f"cannot migrate the state store {self.safe_url}: {e}") from e

    def ping(self) -> None:
        with self._turns, self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Every call of this store in the block (in this thread) as one transaction: committed
        when the block ends, rolled back (nothing written) when it raises. Nested blocks join the
        outer one. A database error comes out as StoreError."""
        current = _CURRENT.get()
        if current is not None and current.db is self:
            yield
            return
        after: list[Callable[[], None]] = []
        try:
            with self._begin() as session:
                token = _CURRENT.set(_Open(self, session, after))
                try:
                    yield
                finally:
                    _CURRENT.reset(token)
        except SQLAlchemyError as e:
            raise self._failed(e) from e
        for fn in after:
            fn()

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once what was written so far is committed: at once outside a
        :meth:`transaction`, after its commit inside one (never, when it rolls back)."""
        current = _CURRENT.get()
        if current is not None and current.db is self:
            current.after.append(fn)
        else:
            fn()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back when it raises; a database
        error comes out as StoreError."""
        try:
            with self._begin() as session:
                yield session
        except SQLAlchemyError as e:
            raise self._failed(e) from e

    def _upsert(
        self, table: Any, values: Mapping[str, Any], keys: Sequence[str], update: Sequence[str]
    ) -> Any:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET update, in the store's dialect (SQLite and
        PostgreSQL both have it): no read-then-write race with a concurrent writer of the row."""
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=[getattr(table, k) for k in keys],
            set_={name: getattr(stmt.excluded, name) for name in update},
        )

    @contextmanager
    def _begin(self) -> Iterator[Session]:
        """A session in a transaction (committed when the block ends), its database errors as
        they are; an in-memory database's transactions one at a time."""
        current = _CURRENT.get()
        if current is not None and current.db is self:  # inside transaction(): its session
            yield current.session
            return
        with self._turns, self._sessions.begin() as session:
            yield session

    def _failed(self, e: SQLAlchemyError) -> StoreError:
        return StoreError(f"state store {self.safe_url}: {e}")


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Processes migrating one new SQLite file at once (a plan next to a starting daemon) take
    turns through a lock file beside it; other databases need none (PostgreSQL: advisory lock)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    with file_lock(f"{database}.migrate-lock"):
        yield


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
