"""Drop indexes no query needs: claim lines by provider (the outlier job reads a date
window; the index was an eighth of the pages a batch of decisions wrote), and five
single-column indexes that a unique constraint starting with the same column already
serves (ledgers by member, ledger entries by ledger, claim images and review items by
record, provider statistics by provider).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 10:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DROPPED = (  # (table, index, columns)
    ("claim_lines", "ix_claim_lines_provider_id", ["provider_id"]),
    ("ledgers", "ix_ledgers_member_id", ["member_id"]),
    ("ledger_entries", "ix_ledger_entries_ledger_id", ["ledger_id"]),
    ("claim_images", "ix_claim_images_audit_seq", ["audit_seq"]),
    ("review_items", "ix_review_items_audit_seq", ["audit_seq"]),
    ("provider_stats", "ix_provider_stats_provider_id", ["provider_id"]),
)


def upgrade() -> None:
    for table, index, _ in DROPPED:
        op.drop_index(index, table_name=table)


def downgrade() -> None:
    for table, index, columns in DROPPED:
        op.create_index(index, table, columns, unique=False)
