"""Appeals and their documents, versioned rule tables (re-adjudication with the cited
versions; proposed and promoted thresholds) and model release baselines (drift).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 03:17:32.796766
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("appeals",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant", sa.String(length=64), nullable=False),
    sa.Column("claim_id", sa.String(length=64), nullable=False),
    sa.Column("original_audit_seq", sa.Integer(), nullable=False),
    sa.Column("audit_seq", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(length=16), nullable=False),
    sa.Column("lines", sa.Text(), nullable=False),
    sa.Column("narrative", sa.Text(), nullable=False),
    sa.Column("submitted_by", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("audit_seq")
    )
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_appeals_original_audit_seq"), ["original_audit_seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_appeals_tenant"), ["tenant"], unique=False)

    op.create_table("model_baselines",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("tenant", sa.String(length=64), nullable=False),
    sa.Column("model", sa.String(length=64), nullable=False),
    sa.Column("version", sa.String(length=64), nullable=False),
    sa.Column("window_from", sa.DateTime(), nullable=False),
    sa.Column("window_to", sa.DateTime(), nullable=False),
    sa.Column("stats", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("tenant", "model", "version")
    )
    op.create_table("table_versions",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=32), nullable=False),
    sa.Column("version", sa.String(length=64), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False),
    sa.Column("source", sa.String(length=16), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("created_by", sa.String(length=64), nullable=False),
    sa.Column("promoted_at", sa.DateTime(), nullable=True),
    sa.Column("promoted_by", sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name", "version")
    )
    with op.batch_alter_table("table_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_table_versions_promoted_at"), ["promoted_at"], unique=False)

    op.create_table("appeal_documents",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("appeal_id", sa.Integer(), nullable=False),
    sa.Column("tenant", sa.String(length=64), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.Column("media_type", sa.String(length=100), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(["appeal_id"], ["appeals.id"], ),
    sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("appeal_documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_appeal_documents_appeal_id"), ["appeal_id"], unique=False)



def downgrade() -> None:
    with op.batch_alter_table("appeal_documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appeal_documents_appeal_id"))

    op.drop_table("appeal_documents")
    with op.batch_alter_table("table_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_table_versions_promoted_at"))

    op.drop_table("table_versions")
    op.drop_table("model_baselines")
    with op.batch_alter_table("appeals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appeals_tenant"))
        batch_op.drop_index(batch_op.f("ix_appeals_original_audit_seq"))

    op.drop_table("appeals")
