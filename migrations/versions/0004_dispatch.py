"""Workers (pool size, measured speed) for fair dispatch and cost estimates; each job's cost.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("numpy_flops", sa.Float),
        sa.Column("keras_flops", sa.Float),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cost", sa.JSON))
    # The dispatcher looks for queued jobs not yet sent, per tenant, oldest first.
    op.create_index("ix_jobs_status_tenant_id", "jobs", ["status", "tenant_id", "id"])
    # ... and when each tenant was last served (round-robin between tenants).
    op.create_index("ix_jobs_tenant_enqueued", "jobs", ["tenant_id", "enqueued_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_enqueued", table_name="jobs")
    op.drop_index("ix_jobs_status_tenant_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cost")
    op.drop_table("workers")
