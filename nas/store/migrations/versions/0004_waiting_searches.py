"""Searches get the status `waiting`: submitted to Ray, which has no node with their resources free yet.

Revision ID: 0004
Revises: 0003

The status is a plain string with a CHECK constraint (see models._enum), so a new status is a new
constraint. PostgreSQL drops and adds it in place. SQLite cannot alter a constraint, and must not rebuild
`searches` as batch mode would: dropping the old table inside the migration's transaction (where foreign
keys cannot be switched off) would cascade into every trial, step, artifact and event. The new constraint
only admits one more value, which changes nothing stored, so SQLite's documented procedure for such
changes (https://www.sqlite.org/lang_altertable.html#otheralter) rewrites the constraint in the schema
text instead. The downgrade puts waiting searches back in the queue first: they were never started, and
a dispatcher claims them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

CONSTRAINT = "ck_searches_search_status"
BEFORE = ("queued", "running", "completed", "failed", "cancelled")
AFTER = ("queued", "waiting", "running", "completed", "failed", "cancelled")


def _one_of(statuses: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(s) for s in statuses)})"


def _change_check(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(CONSTRAINT, "searches", type_="check")
        op.create_check_constraint(CONSTRAINT, "searches", _one_of(new))
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    changed = bind.execute(
        sa.text("UPDATE sqlite_master SET sql = replace(sql, :old, :new) WHERE type = 'table' AND name = 'searches'"),
        {"old": f"CHECK ({_one_of(old)})", "new": f"CHECK ({_one_of(new)})"},
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")  # other connections re-read the schema
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    table = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'searches'")
    if changed.rowcount != 1 or f"CHECK ({_one_of(new)})" not in table.scalar_one():
        raise RuntimeError(f"the searches table has no constraint CHECK ({_one_of(old)}) to change")
    problems = bind.exec_driver_sql("PRAGMA integrity_check").scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"the database failed its integrity check after the change: {problems}")


def upgrade() -> None:
    _change_check(BEFORE, AFTER)


def downgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE searches SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL "
            "WHERE status = 'waiting'"
        )
    )
    _change_check(AFTER, BEFORE)
