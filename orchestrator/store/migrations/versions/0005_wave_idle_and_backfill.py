"""Waves keep their idle device-seconds and deadline; runs say whether they were added to fill idle devices.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("waves", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idle_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("idle_unit", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("capacity", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        # A literal default: SQLite adds the column in place (an expression would make Alembic rebuild the table,
        # which foreign keys from run_metrics and curve_points forbid once rows exist).
        batch_op.add_column(sa.Column("backfill", sa.Boolean(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("backfill")
    with op.batch_alter_table("waves", schema=None) as batch_op:
        batch_op.drop_column("deadline_at")
        batch_op.drop_column("capacity")
        batch_op.drop_column("idle_unit")
        batch_op.drop_column("idle_s")
