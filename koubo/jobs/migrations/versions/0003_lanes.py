"""A fast lane for single jobs: jobs.lane, and the start order's index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from koubo.jobs.migrations import legacy

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    legacy.add_columns("jobs", sa.Column("lane", sa.String(8)))
    legacy.create_index("ix_jobs_started_at", "jobs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_started_at", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lane")
