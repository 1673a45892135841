"""The review queue: claim records (the claim as decided and the readings), the radiographs
of claims a person may look at, queued lines, and dispositions tied to their queue item.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claim_records",
        sa.Column("audit_seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("claim", sa.Text(), nullable=False),
        sa.Column("readings", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("audit_seq"),
    )
    with op.batch_alter_table("claim_records", schema=None) as batch_op:
        batch_op.create_index("ix_claim_records_tenant_claim", ["tenant", "claim_id"], unique=False)
        batch_op.create_index("ix_claim_records_tenant_created", ["tenant", "created_at"], unique=False)
    op.create_table(
        "claim_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("radiograph_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("media", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["audit_seq"], ["claim_records.audit_seq"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("audit_seq", "radiograph_id"),
    )
    with op.batch_alter_table("claim_images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claim_images_audit_seq"), ["audit_seq"], unique=False)
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=False),
        sa.Column("line_id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("fee", sa.Numeric(12, 2), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.Float(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("rank_key", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("audit_seq", "line_id"),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_items_audit_seq"), ["audit_seq"], unique=False)
        batch_op.create_index("ix_review_items_queue", ["tenant", "status", "rank_key"], unique=False)
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_item_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("action", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("code", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("corrections", sa.Text(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("audit_seq", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_reviews_review_item_id"), ["review_item_id"], unique=False)
        batch_op.create_foreign_key("fk_reviews_review_item", "review_items", ["review_item_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_constraint("fk_reviews_review_item", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_reviews_review_item_id"))
        for column in ("audit_seq", "corrections", "code", "action", "review_item_id"):
            batch_op.drop_column(column)
    op.drop_table("review_items")
    op.drop_table("claim_images")
    op.drop_table("claim_records")
