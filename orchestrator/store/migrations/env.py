"""Alembic environment: wavesweep passes its engine in ``config.attributes``; there is no alembic.ini."""

from alembic import context

from orchestrator.store.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
