"""When each job was last sent to the broker, and idempotency keys for POST /v1/jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("idempotency_key", sa.String(200)))
        batch.add_column(sa.Column("request_hash", sa.String(64)))
        batch.create_unique_constraint(
            "uq_jobs_tenant_idempotency", ["tenant_id", "idempotency_key"]
        )
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_heartbeat", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_tenant_idempotency", type_="unique")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("enqueued_at")
