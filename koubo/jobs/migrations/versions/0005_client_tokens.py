"""Idempotent submit: the submitter's token on jobs and batches, unique.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from koubo.jobs.migrations import legacy

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("jobs", "batches"):
        legacy.add_columns(table, sa.Column("client_token", sa.String(64)))
        legacy.create_index(f"ix_{table}_client_token", table, ["client_token"], unique=True)


def downgrade() -> None:
    for table in ("jobs", "batches"):
        op.drop_index(f"ix_{table}_client_token", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("client_token")
