"""The first service's schema: assets, batches, jobs (koubo before the column adder's additions).

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("duration", sa.Double, nullable=False),
        sa.Column("container", sa.String(64), nullable=False),
        sa.Column("stored_name", sa.String(128), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.UniqueConstraint("sha256", "kind"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("batch_id", sa.String(32), sa.ForeignKey("batches.id")),
        sa.Column("audio_id", sa.String(32), sa.ForeignKey("assets.id"), nullable=False),
        sa.Column("video_id", sa.String(32), sa.ForeignKey("assets.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32)),
        sa.Column("progress", sa.Double, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("timings", sa.JSON),
        sa.Column("report", sa.JSON),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_en", sa.Text),
        sa.Column("error_zh", sa.Text),
        sa.Column("output_name", sa.String(255), nullable=False),
        sa.Column("output_path", sa.String(512)),
        sa.Column("output_size", sa.BigInteger),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("heartbeat_at", Time),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("queued_at", Time, nullable=False),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time),
    )
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.create_index("ix_jobs_status_queue_order", "jobs", ["status", "queued_at", "seq"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("batches")
    op.drop_table("assets")
