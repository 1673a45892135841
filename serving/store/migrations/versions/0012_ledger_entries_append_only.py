"""Ledger entries become append-only movements: a later change to what a line holds (an
appeal, a reviewer's disposition) is a new entry with the difference and its reason,
instead of an edit of the line's one entry. The one-entry-per-line constraint goes, an
index by line takes its place for the lookups (none by ledger: nothing looks entries up
by ledger, and ledgers are never deleted), and each entry names its reason
(existing entries: ``decision``). The table is rebuilt (SQLite cannot drop an unnamed
constraint in place).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 11:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = "id, ledger_id, tenant, claim_id, line_id, amount, created_at"


def _columns() -> list[sa.Column]:
    return [sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("ledger_id", sa.Integer(), nullable=False),
            sa.Column("tenant", sa.String(length=64), nullable=False),
            sa.Column("claim_id", sa.String(length=64), nullable=False),
            sa.Column("line_id", sa.String(length=32), nullable=False),
            sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False)]


def _restart_ids() -> None:
    if op.get_bind().dialect.name == "postgresql":  # the copied ids: the sequence continues after them
        op.execute("SELECT setval(pg_get_serial_sequence('ledger_entries', 'id'), "
                   "COALESCE((SELECT MAX(id) FROM ledger_entries), 0) + 1, false)")


def upgrade() -> None:
    op.create_table("ledger_entries_new", *_columns(),
                    sa.Column("reason", sa.String(length=16), server_default="decision", nullable=False),
                    sa.Column("created_at", sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"]), sa.PrimaryKeyConstraint("id"))
    op.execute(f"INSERT INTO ledger_entries_new ({COLUMNS}, reason) SELECT {COLUMNS}, 'decision' FROM ledger_entries")
    op.drop_table("ledger_entries")
    op.rename_table("ledger_entries_new", "ledger_entries")
    op.create_index("ix_ledger_entries_line", "ledger_entries", ["tenant", "claim_id", "line_id"], unique=False)
    _restart_ids()


def downgrade() -> None:
    """Back to one entry per line and ledger: each line's movements summed into one."""
    op.create_table("ledger_entries_old", *_columns(), sa.Column("created_at", sa.DateTime(), nullable=False),
                    sa.ForeignKeyConstraint(["ledger_id"], ["ledgers.id"]), sa.PrimaryKeyConstraint("id"),
                    sa.UniqueConstraint("ledger_id", "tenant", "claim_id", "line_id"))
    op.execute(f"INSERT INTO ledger_entries_old ({COLUMNS}) SELECT MIN(id), ledger_id, tenant, claim_id, line_id, "
               "SUM(amount), MIN(created_at) FROM ledger_entries GROUP BY ledger_id, tenant, claim_id, line_id")
    op.drop_table("ledger_entries")
    op.rename_table("ledger_entries_old", "ledger_entries")
    _restart_ids()
