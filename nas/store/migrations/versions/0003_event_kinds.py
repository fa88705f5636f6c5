"""Events get a kind (log, trial, epoch) and the data of trial and epoch events: the live feed's progress.

Revision ID: 0003
Revises: 0002

Events written before this revision are log lines. Batch mode, because SQLite adds a CHECK
constraint only by rebuilding the table (PostgreSQL alters it in place).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

EVENT_KINDS = ("log", "trial", "epoch")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="log"))
        batch.add_column(sa.Column("data", sa.JSON(), nullable=True))
        batch.create_check_constraint("ck_events_event_kind", f"kind IN ({', '.join(repr(k) for k in EVENT_KINDS)})")


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("ck_events_event_kind", type_="check")
        batch.drop_column("data")
        batch.drop_column("kind")
