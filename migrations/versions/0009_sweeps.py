"""Sweeps: a search over job specs, whose trials are jobs tagged with the sweep and their values.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cost", sa.JSON(), nullable=True),
    )
    op.create_index("ix_sweeps_tenant_id", "sweeps", ["tenant_id", "id"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_sweep_id", "sweeps", ["sweep_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_unique_constraint("uq_jobs_sweep_trial", ["sweep_id", "trial"])
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_constraint("uq_jobs_sweep_trial", type_="unique")
        batch.drop_constraint("fk_jobs_sweep_id", type_="foreignkey")
        batch.drop_column("params")
        batch.drop_column("trial")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_status", table_name="sweeps")
    op.drop_index("ix_sweeps_tenant_id", table_name="sweeps")
    op.drop_table("sweeps")
