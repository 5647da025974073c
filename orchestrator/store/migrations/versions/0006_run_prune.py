"""Runs keep why the pruner stopped them: the rule, the step and the numbers that decided it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prune_step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("prune", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("prune")
        batch_op.drop_column("prune_step")
