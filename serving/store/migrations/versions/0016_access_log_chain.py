"""The access log becomes tamper-evident and quotable: each row gets the request id the
service answered with (``X-Request-ID``), and a hash chained to the row before it (chain
``access`` in ``audit_head``, locked by every batch that appends). Rows written before
this revision stay as they were, unchained: the chain starts after them (``dxv audit
verify`` says how many there are). ``access-pruned`` in ``audit_head`` is the last record
that retention deleted, which the oldest kept record follows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_log") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_index("ix_access_log_request_id", "access_log", ["request_id"], unique=False)
    last = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM access_log")).scalar_one()
    head = sa.table("audit_head", sa.column("chain", sa.String), sa.column("last_seq", sa.Integer),
                    sa.column("last_hash", sa.String))
    op.bulk_insert(head, [{"chain": "access", "last_seq": int(last), "last_hash": "0" * 64}])


def downgrade() -> None:
    op.execute("DELETE FROM audit_head WHERE chain IN ('access', 'access-pruned')")
    op.drop_index("ix_access_log_request_id", table_name="access_log")
    with op.batch_alter_table("access_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("request_id")
