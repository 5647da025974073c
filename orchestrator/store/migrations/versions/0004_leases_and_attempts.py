"""Studies hold a lease (the driver running them, renewed while it runs); runs keep a log of their attempts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("driver", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("lease_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt_log", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("attempt_log")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_since")
        batch_op.drop_column("driver")
