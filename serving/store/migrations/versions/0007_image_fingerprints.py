"""Perceptual fingerprints of every radiograph decided, per tenant, to find recycled images.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_fingerprints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("radiograph_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("date_of_service", sa.Date(), nullable=False),
        sa.Column("version", sa.String(length=8), nullable=False),
        sa.Column("thumb", sa.LargeBinary(), nullable=False),
        sa.Column("coarse", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("image_fingerprints", schema=None) as batch_op:
        batch_op.create_index("ix_image_fingerprints_member", ["tenant", "kind", "member_id"], unique=False)
        batch_op.create_index("ix_image_fingerprints_provider", ["tenant", "kind", "provider_id"], unique=False)


def downgrade() -> None:
    op.drop_table("image_fingerprints")
