"""The driver-level bulk insert stores exactly what SQLAlchemy's own executemany stores,
on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import cast

from sqlalchemy import Table, insert, select, text

from serving.store.bulk import insert_many
from serving.store.database import Store
from serving.store.schema import ClaimLineRow, FingerprintRow

LINES = cast(Table, ClaimLineRow.__table__)


def line(claim_id: str, *, fdi: int | None, fee: str, day: dt.date, mode: str | None = "claim") -> dict:
    row = {"tenant": "t", "claim_id": claim_id, "line_id": "1", "member_id": "M-1", "provider_id": "P-1",
           "date_of_service": day, "code": "D2391", "code_system": "CDT", "concept_id": "c", "category": "basic",
           "fdi": fdi, "quadrant": None if fdi is None else fdi // 10, "fee": Decimal(fee),
           "approved_amount": Decimal(fee), "status": "approved", "action": "pass",
           "decided_at": dt.datetime(2026, 6, 1, 12, 30, 5, 250)}
    if mode is not None:
        row["mode"] = mode
    return row


def stored(store: Store, prefix: str) -> list[tuple]:
    with store.engine.connect() as connection:  # the values as the database holds them
        return [tuple(r) for r in connection.execute(text(
            "SELECT substr(claim_id, 2), line_id, mode, date_of_service, fee, approved_amount, fdi, quadrant, decided_at "
            "FROM claim_lines WHERE claim_id LIKE :p ORDER BY claim_id"), {"p": prefix + "%"})]


def test_bulk_rows_are_stored_as_sqlalchemy_stores_them(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        rows = [line("1", fdi=36, fee="150.00", day=dt.date(2026, 5, 31)),
                line("2", fdi=None, fee="95.5", day=dt.date(2026, 5, 31)),
                line("3", fdi=46, fee="0.01", day=dt.date(2024, 2, 29), mode=None)]  # mode left to its default
        with store.transaction() as session:
            insert_many(session.connection(), LINES, [{**r, "claim_id": "B" + r["claim_id"]} for r in rows])
            for r in rows:  # SQLAlchemy's executemany needs the same keys in every row
                session.connection().execute(insert(LINES), [{**r, "claim_id": "S" + r["claim_id"]}])
        assert stored(store, "B") == stored(store, "S")
        with store.transaction() as session:
            back = session.execute(select(ClaimLineRow).where(ClaimLineRow.claim_id.like("B%"))
                                   .order_by(ClaimLineRow.claim_id)).scalars().all()
        assert [(r.mode, r.date_of_service, r.fee, r.fdi, r.decided_at) for r in back] == [
            ("claim", dt.date(2026, 5, 31), Decimal("150.00"), 36, dt.datetime(2026, 6, 1, 12, 30, 5, 250)),
            ("claim", dt.date(2026, 5, 31), Decimal("95.50"), None, dt.datetime(2026, 6, 1, 12, 30, 5, 250)),
            ("claim", dt.date(2024, 2, 29), Decimal("0.01"), 46, dt.datetime(2026, 6, 1, 12, 30, 5, 250))]
    finally:
        store.close()


def test_bulk_insert_stores_binary_values_and_repeated_ones(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        now = dt.datetime(2026, 6, 1, 12, 0)
        rows = [{"tenant": "t", "kind": "periapical", "claim_id": f"C{i}", "mode": "claim", "radiograph_id": "r",
                 "member_id": "M", "provider_id": "P", "date_of_service": dt.date(2026, 6, i + 1), "version": "1",
                 "thumb": bytes([i]) * 5, "coarse": b"\x00\xff", "created_at": now} for i in range(3)]
        with store.transaction() as session:
            insert_many(session.connection(), cast(Table, FingerprintRow.__table__), rows)
        with store.transaction() as session:
            back = session.execute(select(FingerprintRow.claim_id, FingerprintRow.date_of_service, FingerprintRow.thumb,
                                          FingerprintRow.coarse, FingerprintRow.created_at)
                                   .order_by(FingerprintRow.claim_id)).all()
        assert [tuple(r) for r in back] == [(f"C{i}", dt.date(2026, 6, i + 1), bytes([i]) * 5, b"\x00\xff", now)
                                            for i in range(3)]
    finally:
        store.close()
