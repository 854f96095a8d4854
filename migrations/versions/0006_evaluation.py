"""Each model's evaluation on its test split (core.evaluation), kept as JSON beside it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: models trained before evaluations were recorded answer `evaluation: null`.
    op.add_column("models", sa.Column("evaluation", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("models", "evaluation")
