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
    assert _revision(engine) == ["0005"]
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
    assert _revision(engine) == ["0005"]


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
        assert _revision(engines[0]) == ["0005"]
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


def test_waiting_is_a_status_and_a_downgrade_queues_waiting_searches_again(db_url: str):
    engine = make_engine(db_url)
    when = "'2026-05-01 12:00:00'"

    def insert(search_id: str, status: str) -> None:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO searches (id, name, strategy, spec, status, cancel_requested, created_at, "
                    f"updated_at, attempts, lease_owner) VALUES ('{search_id}', 'x', 'darts', '{{}}', '{status}', "
                    f"false, {when}, {when}, 1, 'dispatcher#1')"
                )
            )

    try:
        migrate(engine)
        insert("s1", "waiting")
        with engine.begin() as connection:
            connection.execute(
                text(f"INSERT INTO events (search_id, level, message, created_at) VALUES ('s1', 20, 'kept', {when})")
            )
        with engine.connect().execution_options(sqlite_immediate=True) as connection, connection.begin():
            command.downgrade(alembic_config(connection), "0003")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT status, lease_owner FROM searches")).all()
            events = connection.execute(text("SELECT message FROM events")).scalars().all()
        assert [tuple(r) for r in rows] == [("queued", None)]  # never started: a dispatcher claims it again
        assert events == ["kept"]  # the searches table was not rebuilt: nothing cascaded into its events
        with pytest.raises(IntegrityError):
            insert("s2", "waiting")
    finally:
        engine.dispose()


def test_f1_and_latency_columns_are_filled_from_stored_metrics_and_nothing_cascades(db_url: str):
    engine = make_engine(db_url)
    when = "'2026-05-01 12:00:00'"
    trials = {  # id -> metrics JSON as a trial stored it before revision 0005
        1: '{"ua": 0.5, "macro_f1": 0.625, "latency_ms_p50": 2}',
        2: '{"macro_f1": "n/a", "latency_ms_p50": null}',  # no numbers to copy
        3: None,  # still running
    }
    try:
        with engine.connect().execution_options(sqlite_immediate=True) as connection, connection.begin():
            command.upgrade(alembic_config(connection), "0004")
            connection.execute(
                text(
                    "INSERT INTO searches (id, name, strategy, spec, status, cancel_requested, created_at, updated_at, "
                    f"attempts) VALUES ('s1', 'old', 'darts', '{{}}', 'running', false, {when}, {when}, 1)"
                )
            )
            for trial_id, metrics in trials.items():
                connection.execute(
                    text(
                        "INSERT INTO trials (id, search_id, key, params, state, metrics, fold, started_at) "
                        f"VALUES ({trial_id}, 's1', 't{trial_id}', '{{}}', 'complete', :metrics, 0, {when})"
                    ),
                    {"metrics": metrics},
                )
            connection.execute(
                text(f"INSERT INTO trial_steps (trial_id, step, metrics, created_at) VALUES (1, 1, '{{}}', {when})")
            )
            connection.execute(
                text(
                    f"INSERT INTO events (search_id, trial_id, level, message, created_at) VALUES ('s1', 1, 20, 'e', "
                    f"{when})"
                )
            )
        migrate(engine)
        with engine.connect() as connection:
            copied = connection.execute(text("SELECT id, macro_f1, latency_ms FROM trials ORDER BY id")).all()
        assert [tuple(r) for r in copied] == [(1, 0.625, 2.0), (2, None, None), (3, None, None)]
        indexes = {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("trials")}
        assert {("search_id", "macro_f1", "id"), ("search_id", "latency_ms", "id"), ("search_id", "fold", "id")} <= (
            indexes
        )

        with engine.connect().execution_options(sqlite_immediate=True) as connection, connection.begin():
            command.downgrade(alembic_config(connection), "0004")
        assert {"macro_f1", "latency_ms"}.isdisjoint(c["name"] for c in inspect(engine).get_columns("trials"))
        with engine.connect() as connection:
            kept = [
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("trials", "trial_steps", "events")
            ]
        assert kept == [3, 1, 1]  # the trials table was not rebuilt: its steps and events are still there
    finally:
        engine.dispose()
