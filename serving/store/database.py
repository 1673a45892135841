"""Connecting to the state store and bringing its schema up to date.

The URL comes from the caller, else ``$DXV_STATE_URL``, else a SQLite file under the
project's data folder. On SQLite every transaction starts with ``BEGIN IMMEDIATE`` (the
write lock is taken at the start, so two adjudications of the same member serialise
instead of failing at commit); on PostgreSQL the ledger rows are locked with
``SELECT ... FOR UPDATE``. The schema is managed by Alembic (``migrations/``).

A long-running SQLite writer (a service replica, the benchmark) opens the store with
``checkpoint_in_background=True``: the write-ahead log is then copied into the database
file by a thread of its own after each commit, not by the committing transaction while it
holds the write lock (SQLite's automatic checkpoint, which otherwise costs a batch of
decisions about a tenth of its time). A backstop remains: a writer still checkpoints
itself if the log outgrows ``WAL_BACKSTOP_PAGES`` (the thread fell behind or stopped)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models.errors import DxvError
from models.paths import data_dir
from serving.store.likeness import LikenessPools

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
WAL_BACKSTOP_PAGES = 16_384  # 64 MiB of 4 KiB pages
READ_ONLY = "dxv_read_only"  # execution option of Store.reading's connections
log = logging.getLogger("dxv.store")


class StoreError(DxvError):
    code = "store.error"


def default_url() -> str:
    url = os.environ.get("DXV_STATE_URL")
    if url:
        return url
    path = data_dir() / "state" / "dxv.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"  # an absolute path: sqlite:/// + /abs/path


def make_engine(url: str | None = None, *, wal_autocheckpoint_pages: int | None = None) -> Engine:
    """``wal_autocheckpoint_pages`` (SQLite): the log size at which a committing writer
    checkpoints itself; None keeps SQLite's default (1,000 pages)."""
    url = url or default_url()
    if url.startswith("sqlite"):
        # hide_parameters: a database error's message never carries the statement's values
        # (member ids, claim ids), since such messages reach logs.
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            if wal_autocheckpoint_pages is not None:
                cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint_pages)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:
            # A read-only transaction (Store.reading) takes no write lock: in WAL mode it
            # never waits for a writer.
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (an empty database gets the whole schema)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


class WalCheckpointer:
    """Copies a SQLite database's write-ahead log into the database file on its own thread
    and connection, woken after each committed transaction (at most every ``min_interval_s``). PASSIVE
    checkpoints never wait for, nor block, readers and writers; the sqlite3 module lets go
    of the GIL while one runs, so its file writes overlap the next batch's work."""

    def __init__(self, path: str, *, min_interval_s: float = 0.2) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._stopping.is_set():
                    break
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # busy or I/O: the next commit tries again (the backstop remains)
                    log.warning("background checkpoint failed: %s", exc)
                time.sleep(self.min_interval_s)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=60)


class Store:
    """An engine and a session factory; ``Store.open(url)`` migrates to head first."""

    def __init__(self, engine: Engine, checkpointer: WalCheckpointer | None = None) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.checkpointer = checkpointer
        # The recycled-image lookup's pools, read incrementally. SQLite's writers commit one at
        # a time in id order, so nothing commits below an id already seen and one row read
        # again is enough; PostgreSQL's can commit out of order (likeness.REREAD_ROWS).
        self.likeness = LikenessPools(reread=1) if engine.dialect.name == "sqlite" else LikenessPools()
        self.closed = False

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True, checkpoint_in_background: bool = False) -> Store:
        """``checkpoint_in_background``: for a long-running writer on a SQLite file (see the
        module's note); ignored for other databases."""
        url = url or default_url()
        if migrate:
            upgrade(url)
        database = make_url(url).database
        if not (checkpoint_in_background and url.startswith("sqlite") and database and database != ":memory:"):
            return cls(make_engine(url))
        engine = make_engine(url, wal_autocheckpoint_pages=WAL_BACKSTOP_PAGES)
        return cls(engine, WalCheckpointer(database))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self.sessions() as session, session.begin():
            yield session
        if self.checkpointer is not None:
            self.checkpointer.nudge()  # after the commit: its pages are in the log now

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads (an API-key check, a lookup). On SQLite it begins
        without the write lock (a plain BEGIN), so in WAL mode it neither waits for an
        adjudication that holds the lock nor holds one up. It is rolled back at the end:
        nothing written in it is kept."""
        with self.sessions() as session:
            session.connection(execution_options={READ_ONLY: True})  # begins the transaction
            try:
                yield session
            finally:
                session.rollback()

    def reachable(self) -> bool:
        """Whether a read-only transaction can be opened now (the readiness check)."""
        try:
            with self.reading() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        self.closed = True  # background writers (the access log) stop rather than reopen it
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
