"""Trials get `macro_f1` and `latency_ms` columns, and indexes to list one fold's trials and to sort by F1 or latency.

Revision ID: 0005
Revises: 0004

The dashboard sorts a search's trials by macro-F1 and latency as it does by UA: from real columns (copies of
the metrics `macro_f1` and `latency_ms_p50`, as `ua` and `wa` are) with one (search_id, column, id) index each,
so a keyset page costs the same at trial 100,000 as at trial 1; (search_id, fold, id) does the same for the fold
filter. Adding a nullable column is an in-place ALTER TABLE on both backends, and so is dropping one that no
index covers (SQLite 3.35+): no table is rebuilt, so nothing cascades into trial steps, artifacts or events.
Trials stored before this revision get their columns from their metrics, where those hold a number.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

# column -> the metric it copies
COPIED = {"macro_f1": "macro_f1", "latency_ms": "latency_ms_p50"}
INDEXED = ("macro_f1", "latency_ms", "fold")


def _metric_number(dialect: str, metric: str) -> str:
    """SQL for the trial's metric `metric` as a float, NULL where it is absent or not a number."""
    if dialect == "postgresql":
        value = f"metrics -> '{metric}'"
        return f"CASE WHEN json_typeof({value}) = 'number' THEN CAST(metrics ->> '{metric}' AS DOUBLE PRECISION) END"
    path = f"'$.\"{metric}\"'"
    return f"CASE WHEN json_type(metrics, {path}) IN ('integer', 'real') THEN json_extract(metrics, {path}) END"


def upgrade() -> None:
    for column in COPIED:
        op.add_column("trials", sa.Column(column, sa.Double(), nullable=True))
    dialect = op.get_bind().dialect.name
    copies = ", ".join(f"{column} = {_metric_number(dialect, metric)}" for column, metric in COPIED.items())
    op.execute(f"UPDATE trials SET {copies} WHERE metrics IS NOT NULL")
    for column in INDEXED:
        op.create_index(f"ix_trials_search_id_{column}_id", "trials", ["search_id", column, "id"])


def downgrade() -> None:
    for column in INDEXED:
        op.drop_index(f"ix_trials_search_id_{column}_id", table_name="trials")
    for column in COPIED:
        op.drop_column("trials", column)
