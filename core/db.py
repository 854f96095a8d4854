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
    literal,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


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


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


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

    def __init__(self, url: str) -> None:
        self.url = url
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
            self._engine = make_engine(self.url)
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
