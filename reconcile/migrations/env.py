"""Alembic environment: migrations run from `reconcile.db.migrate`, online only."""

from alembic import context
from sqlalchemy import create_engine, pool

from reconcile.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
