"""The job database's schema, brought up to date at startup by Alembic's migrations (migrations/).

Every koubo process opens the database the same way, so several may start together: on PostgreSQL
an advisory lock makes them take turns, on SQLite the transaction's BEGIN IMMEDIATE does. The whole
upgrade is one transaction on the caller's connection: it lands whole or not at all.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text

log = logging.getLogger(__name__)
# Alembic tells at INFO which context it chose each time a process opens the database; this module
# logs what it changed instead.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).with_name("migrations")
# The revision whose schema the databases written before Alembic all have (they may have more).
FIRST_REVISION = "0001"
# Any number, the same in every koubo process: the PostgreSQL lock that serialises schema changes.
_SCHEMA_LOCK_KEY = 0x6B6F75626F


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built here: no alembic.ini to ship or find."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    # The migrations on disk do not change while a process runs.
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations have no head"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(connection: Connection, metadata: MetaData) -> None:
    """Bring the database behind `connection` (inside a transaction) to the newest revision.

    An empty database gets `metadata`'s tables at once and is stamped with the head revision (the
    migrations' tests check that both ways end in the same schema). A database from before Alembic
    (tables, no version) is stamped with the first revision; the revisions after it add only what
    the old column adder had not added yet.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
    config = alembic_config(connection)
    revision = current_revision(connection)
    if revision is None and not inspect(connection).has_table("jobs"):
        metadata.create_all(connection)
        command.stamp(config, "head")
        return
    if revision is None:
        log.info("database from before schema versions: taking it as revision %s", FIRST_REVISION)
        command.stamp(config, FIRST_REVISION)
    if revision != head_revision():
        command.upgrade(config, "head")
        log.info("database upgraded from revision %s to %s", revision or FIRST_REVISION, head_revision())
