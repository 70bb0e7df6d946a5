"""Alembic environment: migrations run from `reconcile.db.migrate`, online only."""

from alembic import context
from sqlalchemy import text

from reconcile.db import MIGRATION_LOCK, make_engine
from reconcile.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = make_engine(url)
# Several processes may start at once and all migrate. The whole upgrade is one transaction
# that first takes a lock: the first process upgrades, the others wait for it and then find
# the version already at head. PostgreSQL: an advisory lock held to the end of the
# transaction; SQLite: `make_engine` begins every transaction with BEGIN IMMEDIATE.
with engine.connect() as connection, connection.begin():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
engine.dispose()
