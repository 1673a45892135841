"""Claim records carry a drift summary (serving.drift.score_summary: the billed line count
and, per monitored model version, the radiographs read and every detection score by
class), so that a drift window reads a few hundred bytes per claim instead of parsing
every reading; existing records are summarised from their readings. Records get an index
on their time alone, for windows over every tenant.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 11:20:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

RECORDS = sa.table("claim_records", sa.column("audit_seq", sa.Integer), sa.column("claim", sa.Text),
                   sa.column("readings", sa.Text), sa.column("summary", sa.Text))


def _summary(readings: list[dict], lines: int) -> dict:
    """serving.drift.score_summary as it was at this revision (a migration must not change
    when the application's code does)."""
    models: dict[tuple[str, str], dict] = {}
    for reading in readings:
        versions = reading.get("model_versions", {})
        for model in ("findings", "tooth-numbering"):
            if model not in versions:
                continue
            entry = models.setdefault((model, versions[model]), {"model": model, "version": versions[model],
                                                                 "images": 0, "scores": {}})
            entry["images"] += 1
            found = ([("tooth", t["score"]) for t in reading.get("teeth", [])] if model == "tooth-numbering"
                     else [(f["class"], f["score"]) for f in reading.get("findings", [])])
            for cls, score in found:
                entry["scores"].setdefault(cls, []).append(score)
    return {"lines": lines, "models": list(models.values())}


def upgrade() -> None:
    op.add_column("claim_records", sa.Column("summary", sa.Text(), nullable=True))
    connection = op.get_bind()
    last = -1
    while True:  # in pages: a store may hold many records
        page = connection.execute(sa.select(RECORDS.c.audit_seq, RECORDS.c.claim, RECORDS.c.readings)
                                  .where(RECORDS.c.audit_seq > last).order_by(RECORDS.c.audit_seq).limit(1000)).all()
        if not page:
            break
        connection.execute(RECORDS.update().where(RECORDS.c.audit_seq == sa.bindparam("seq"))
                           .values(summary=sa.bindparam("text")),
                           [{"seq": seq, "text": json.dumps(_summary(json.loads(readings),
                                                                      len(json.loads(claim).get("lines", []))))}
                            for seq, claim, readings in page])
        last = page[-1][0]
    with op.batch_alter_table("claim_records") as batch:
        batch.alter_column("summary", existing_type=sa.Text(), nullable=False)
        batch.create_index("ix_claim_records_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claim_records") as batch:
        batch.drop_index("ix_claim_records_created")
        batch.drop_column("summary")
