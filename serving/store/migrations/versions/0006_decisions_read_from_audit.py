"""Decisions are stored once: the ``decisions`` row points at its audit record (which holds
the decision JSON and is hashed) instead of keeping a second copy; lookups by audit id
get an index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 01:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("decision")
        batch_op.create_index(batch_op.f("ix_decisions_audit_seq"), ["audit_seq"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_audit_seq"))
        batch_op.add_column(sa.Column("decision", sa.Text(), nullable=False, server_default=""))
    # Fill the copies back in from the audit records they point at.
    op.execute("UPDATE decisions SET decision = (SELECT payload FROM audit_log WHERE audit_log.seq = decisions.audit_seq)")
