"""Connecting to the state store and bringing its schema up to date.

The URL comes from the caller, else ``$DXV_STATE_URL``, else a SQLite file under the
project's data folder. On SQLite every transaction starts with ``BEGIN IMMEDIATE`` (the
write lock is taken at the start, so two adjudications of the same member serialise
instead of failing at commit); on PostgreSQL the ledger rows are locked with
``SELECT ... FOR UPDATE``. The schema is managed by Alembic (``migrations/``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from models.errors import DxvError
from models.paths import data_dir

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StoreError(DxvError):
    code = "store.error"


def default_url() -> str:
    url = os.environ.get("DXV_STATE_URL")
    if url:
        return url
    path = data_dir() / "state" / "dxv.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"  # an absolute path: sqlite:/// + /abs/path


def make_engine(url: str | None = None) -> Engine:
    url = url or default_url()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


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


class Store:
    """An engine and a session factory; ``Store.open(url)`` migrates to head first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Store:
        url = url or default_url()
        if migrate:
            upgrade(url)
        return cls(make_engine(url))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()
