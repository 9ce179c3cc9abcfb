"""Several machines and webhooks: the workers table, routing columns, the webhook outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from koubo.jobs.migrations import legacy

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    legacy.create_table(
        "workers",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("device", sa.String(8), nullable=False),
        sa.Column("engines", sa.JSON, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("heartbeat_at", Time, nullable=False),
        sa.Column("stopped_at", Time),
    )
    legacy.add_columns(
        "jobs",
        sa.Column("worker_name", sa.String(255)),
        sa.Column("engine", sa.String(32)),
        sa.Column("device", sa.String(8)),
        sa.Column("notify_state", sa.String(16)),
        sa.Column("notify_attempts", sa.Integer),
        sa.Column("notify_next_at", Time),
    )
    legacy.create_index("ix_jobs_notify", "jobs", ["notify_state", "notify_next_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_notify", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("worker_name", "engine", "device", "notify_state", "notify_attempts", "notify_next_at"):
            batch.drop_column(column)
    op.drop_table("workers")
