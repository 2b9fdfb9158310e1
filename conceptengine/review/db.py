"""Database engine for the review queue: SQLite done right for several writers, any other URL as is.

SQLite's default (deferred) transactions let two writers both read, then one fails to upgrade its
lock with SQLITE_BUSY no busy-timeout can fix. Write transactions here therefore start with
`BEGIN IMMEDIATE`, which takes the write lock up front and waits (busy timeout) for it; reads stay
deferred and, in WAL mode, never block writers. On PostgreSQL many writers run at once: the queue
locks the rows it leases with `SELECT ... FOR UPDATE SKIP LOCKED` (concurrent reviewers pass over each
other's candidates instead of queueing behind them) and still claims them with compare-and-set updates,
so the queue's logic is the same on both backends; SQLite's compiler simply omits the locking clause.

Writers of one SQLite file in one process also queue on a lock of their own before `BEGIN IMMEDIATE`:
SQLite's busy handler polls with growing sleeps (up to 100 ms), so twenty web requests contending for the
write lock waited far longer than the few milliseconds each holds it; a Python lock wakes the next writer
the moment the last one commits. Other processes (the engine beside the web app) still meet the busy
timeout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from conceptengine.engine.store import RunStore

BUSY_TIMEOUT_S = 30.0
_WRITE = "conceptengine_write"
# One lock per SQLite database in this process, shared by every engine on it (the web app opens several).
# Re-entrant: a write nested in a write fails on SQLite's busy timeout as before instead of hanging here.
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def normalize_url(url: str) -> str:
    """Accept a bare file path (e.g. `RUN/review.db`) as well as a SQLAlchemy URL."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"review queue url: must be a SQLAlchemy URL or a file path, got {url!r}")
    if "://" not in url:
        return f"sqlite:///{os.path.abspath(url)}"
    return url


def _create_private(database: str) -> None:
    """Create a new SQLite file readable by its owner only (it holds token hashes and answers; SQLite gives
    its -wal and -shm files the same permissions). An existing file is never opened here: closing any
    descriptor of a database drops the POSIX locks this process's connections hold on it."""
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise ValueError(f"review queue url: {url!r} is not a valid database URL ({exc})") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"review queue url: backend {backend!r} is not supported; use sqlite or postgresql")
    if backend != "sqlite":
        # A team's web app serves its reviewers from a thread pool: allow that many connections.
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:")
    if in_memory:
        # One shared connection: an in-memory database exists per connection (single process only).
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        os.makedirs(os.path.dirname(os.path.abspath(database)) or ".", exist_ok=True)
        _create_private(database)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if not in_memory:
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def _writer_lock(engine: Engine) -> AbstractContextManager:
    if engine.dialect.name != "sqlite":
        return nullcontext()
    key = (
        os.path.abspath(engine.url.database)
        if engine.url.database not in (None, "", ":memory:")
        else id(engine)
    )
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(str(key), threading.RLock())


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds SQLite's write lock from its first statement (no-op flag elsewhere)."""
    with _writer_lock(engine), engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
        yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def insert_ignore(conn: Connection, table: Table, values: dict, conflict: list[str]) -> None:
    """INSERT that does nothing when a row with the same `conflict` key exists (or is being inserted).

    Unlike catching IntegrityError, this leaves a PostgreSQL transaction usable afterwards.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict))
    elif dialect == "sqlite":
        conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict))
    else:
        raise ValueError(f"review queue url: backend {dialect!r} is not supported; use sqlite or postgresql")


def run_queue_url(configured: str | None, store: RunStore) -> str:
    """A run's review queue: `review.url` (e.g. PostgreSQL for a team), else SQLite at RUN/review.db. One
    definition, so the engine and the review server always open the same queue."""
    return configured or f"sqlite:///{store.local_path('review.db')}"
