from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from nas.store.db import alembic_config, default_url, make_engine, migrate
from nas.store.models import Base

TABLES = {"searches", "trials", "trial_steps", "artifacts", "events"}


def _revision(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_migrations_create_the_schema_of_the_models(engine: Engine):
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert _revision(engine) == ["0003"]
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []  # the migration and the models agree


def test_dashboard_indexes_exist(engine: Engine):
    trial_indexes = {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("trials")}
    for columns in [("search_id", "state", "id"), ("search_id", "ua", "id"), ("search_id", "id")]:
        assert columns in trial_indexes
    assert ("search_id", "id") in {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("events")}


def test_migrate_is_idempotent(engine: Engine):
    migrate(engine)
    migrate(engine)
    assert _revision(engine) == ["0003"]


def test_concurrent_first_migrations_all_succeed(db_url: str):
    engines = [make_engine(db_url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def run(engine: Engine) -> None:
        start.wait()
        try:
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert _revision(engines[0]) == ["0003"]
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_default_file_is_created_under_the_data_dir_with_wal(tmp_path: Path):
    url = default_url(tmp_path / "nested" / "data")
    assert url == f"sqlite:///{tmp_path / 'nested' / 'data' / 'sernas.db'}"
    engine = make_engine(url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
        assert pragma == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1}
        assert (tmp_path / "nested" / "data" / "sernas.db").is_file()
    finally:
        engine.dispose()


def test_events_written_before_kinds_existed_become_log_lines_and_kinds_are_checked(db_url: str):
    engine = make_engine(db_url)
    when = "'2026-05-01 12:00:00'"  # a timestamp literal both backends read
    try:
        with engine.connect().execution_options(sqlite_immediate=True) as connection, connection.begin():
            command.upgrade(alembic_config(connection), "0002")
            connection.execute(
                text(
                    "INSERT INTO searches (id, name, strategy, spec, status, cancel_requested, created_at, updated_at, "
                    f"attempts) VALUES ('s1', 'old', 'darts', '{{}}', 'running', false, {when}, {when}, 1)"
                )
            )
            connection.execute(
                text(f"INSERT INTO events (search_id, level, message, created_at) VALUES ('s1', 20, 'old', {when})")
            )
        migrate(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT kind, data, message FROM events")).all()
        assert [tuple(r) for r in rows] == [("log", None, "old")]
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO events (search_id, kind, level, message, created_at) "
                    f"VALUES ('s1', 'gossip', 20, 'x', {when})"
                )
            )
    finally:
        engine.dispose()
