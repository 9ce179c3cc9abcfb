"""Schema changes that koubo's old column adder may have made already.

Before Alembic, every start added whatever tables, nullable columns and indexes the models had and
the database lacked. A database from those days is stamped with the first revision (see
koubo/jobs/schema.py) and then upgraded; the revisions written before Alembic came use these
helpers, which skip what is already there. Revisions written after it use `op` directly.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def add_columns(table: str, *columns: sa.Column) -> None:
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}
    for column in columns:
        if column.name not in present:
            op.add_column(table, column)


def create_index(name: str, table: str, columns: list[str], unique: bool = False) -> None:
    if name not in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.create_index(name, table, columns, unique=unique)


def create_table(name: str, *columns: sa.Column) -> None:
    if not sa.inspect(op.get_bind()).has_table(name):
        op.create_table(name, *columns)
