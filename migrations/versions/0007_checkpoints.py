"""Checkpoints of running jobs, the epoch a job resumed from, who runs a job, and whether its
worker asked to give it back (a warm shutdown).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker", sa.String(200), nullable=True))
        batch.add_column(sa.Column("resumed_from_epoch", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("handback_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "job_checkpoints",
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("arrays", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_checkpoints")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("handback_requested")
        batch.drop_column("resumed_from_epoch")
        batch.drop_column("worker")
