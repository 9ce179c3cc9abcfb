"""Alembic's environment: migrations run on the connection koubo/jobs/schema.py hands over.

That connection is already inside the transaction that holds the schema lock, so every revision
of one upgrade commits together or not at all. `alembic -x url=... revision --autogenerate` from a
developer's shell has no such connection and gets one from that URL instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from koubo.jobs.store import Base, create_db_engine

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("give the database: alembic -x url=sqlite:///path/koubo.db ...")
    engine = create_db_engine(url)
    try:
        with engine.begin() as own:
            _run_on(own)
    finally:
        engine.dispose()


def _run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
