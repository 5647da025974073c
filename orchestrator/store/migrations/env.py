"""Alembic environment: wavesweep passes its engine in ``config.attributes``; there is no alembic.ini.

With a ``connection`` too (``engine.upgrade``/``ensure_schema``), the migrations run on it, inside the transaction
that holds the schema lock; the caller commits."""

from alembic import context

from orchestrator.store.models import Base

connection = context.config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
