"""Object storage delivery: the upload outbox's columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from koubo.jobs.migrations import legacy

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("storage_state", "storage_key", "storage_etag", "storage_error", "storage_attempts", "storage_next_at")


def upgrade() -> None:
    legacy.add_columns(
        "jobs",
        sa.Column("storage_state", sa.String(16)),
        sa.Column("storage_key", sa.String(1024)),
        sa.Column("storage_etag", sa.String(128)),
        sa.Column("storage_error", sa.Text),
        sa.Column("storage_attempts", sa.Integer),
        sa.Column("storage_next_at", sa.DateTime(timezone=True)),
    )
    legacy.create_index("ix_jobs_storage", "jobs", ["storage_state", "storage_next_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_storage", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
