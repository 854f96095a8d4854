"""Database engine and sessions, without any web or task framework."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

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
