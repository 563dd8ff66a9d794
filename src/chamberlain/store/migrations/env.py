"""Alembic environment: always driven in-process by chamberlain.store.database with a live connection."""

from alembic import context

from chamberlain.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
