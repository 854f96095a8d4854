"""Database engine and sessions, without any web or task framework."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    DateTime,
    Engine,
    Float,
    Result,
    create_engine,
    event,
    exc,
    literal,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

# Seconds to connect to PostgreSQL, and after which a connection whose server stopped answering
# (a cut network, a vanished host) is given up: DATABASE_TIMEOUT_SECONDS.
DEFAULT_TIMEOUT = 10.0


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; the busy timeout makes writers wait their turn
    # instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL is still safe from corruption; it skips an fsync per commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def postgres_timeouts(timeout: float) -> dict[str, int]:
    """libpq options that bound every wait on the server to about `timeout` seconds.

    Without them a statement sent just before the network was cut waits for the kernel's TCP
    retransmissions (a quarter of an hour): keepalives probe an idle connection, and
    tcp_user_timeout drops one whose sent data goes unacknowledged for that long.
    """
    seconds = max(1, round(timeout))
    return {
        "connect_timeout": max(2, seconds),  # libpq's minimum
        "keepalives": 1,
        "keepalives_idle": max(1, seconds // 3),
        "keepalives_interval": max(1, seconds // 6),
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
    }


def connection_lost(error: BaseException) -> bool:
    """True for a database error that says the server cannot be reached now (down, restarting,
    the network cut), as opposed to a wrong statement: worth answering 503 or trying later."""
    if isinstance(error, exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        # SQLite's OperationalError is about the file (locked, no such table), not a network.
        driver = type(error.orig).__module__ if error.orig is not None else ""
        return not driver.startswith("sqlite3") and isinstance(
            error, exc.OperationalError | exc.InterfaceError
        )
    return False


def make_engine(url: str, timeout: float = DEFAULT_TIMEOUT) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=timeout,
        connect_args=postgres_timeouts(timeout),
    )


class db_now(FunctionElement[Any]):  # noqa: N801 - used like func.now()
    """The database server's clock, `seconds` from now: the one clock every host agrees on.

    PostgreSQL: `now()` (the transaction's start) plus an interval. SQLite: `strftime` with
    microsecond digits, the text SQLAlchemy stores datetimes as, so stored values and this one
    compare as text in time order. Heartbeats, staleness, dispatch and every timestamp a worker
    writes use it, never a host's own clock.
    """

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(literal(float(seconds), Float()))


@compiles(db_now)
def _db_now_default(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(now() + make_interval(secs => {seconds}))"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    # %f is seconds with milliseconds (SS.SSS); three zeros make the six digits SQLAlchemy writes.
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', ({seconds}) || ' seconds')"


def read_db_now(session: Session) -> datetime:
    """The database server's clock, read once (aware, UTC)."""
    value = session.scalar(select(db_now()))
    assert value is not None
    return aware(value)


def aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are stored in UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched."""
    return int(cast(CursorResult[Any], result).rowcount)


class Database:
    """One engine and its session factory; created lazily so forks get their own connections."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None
        self._pid = os.getpid()

    @property
    def engine(self) -> Engine:
        if self._engine is not None and self._pid != os.getpid():
            # Inherited across fork: drop the parent's pooled connections without closing them.
            self._engine.dispose(close=False)
            self._engine = None
        if self._engine is None:
            self._engine = make_engine(self.url, self.timeout)
            self._sessionmaker = sessionmaker(bind=self._engine, expire_on_commit=False)
            self._pid = os.getpid()
        return self._engine

    def session(self) -> Session:
        self.engine  # noqa: B018 - (re)creates the engine and session factory for this process
        assert self._sessionmaker is not None
        return self._sessionmaker()

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A session in one transaction: commit on success, roll back on error, always close."""
        session = self.session()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
