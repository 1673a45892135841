"""State-store fixtures: every store test runs on a fresh SQLite file and on a fresh
PostgreSQL schema (the CI machine's 127.0.0.1:5432, database ``test``; set
``DXV_TEST_POSTGRES_URL`` to point elsewhere)."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from models.inference import DentalReader
from models.model_card import SHIPPED_DIR
from serving.adjudication import RuleTables
from serving.api.app import ModelReader
from serving.plans import load_plans
from serving.store import repository
from serving.store.database import Store

POSTGRES = os.environ.get("DXV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = dt.datetime(2026, 5, 1, 9, 0)


@pytest.fixture(scope="session")
def rule_tables() -> RuleTables:
    return RuleTables.load()


@pytest.fixture(scope="session")
def models() -> ModelReader:
    """The shipped ONNX models as the API reads with them (loaded once for all tests)."""
    return ModelReader(DentalReader.from_directory(SHIPPED_DIR, threads=2))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    schema = f"dxv_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def seeded_store(store_url, rule_tables) -> Iterator[Store]:
    store = Store.open(store_url)
    with store.transaction() as session:
        repository.save_plans(session, load_plans(), NOW)
        repository.seed(session, repository.load_seed_file("configs/seed/demo.yaml"), rule_tables.validation.catalogue, NOW)
    yield store
    store.close()
