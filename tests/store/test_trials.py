from __future__ import annotations

import hashlib
import logging
import math
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from nas.errors import ConfigError, UnknownNameError
from nas.reporting import TrialState
from nas.store import repository as repo
from nas.store.models import Artifact, SearchStatus, Trial, TrialStep
from tests.store.test_searches import T0, queue


def _count(sessions, model, **where) -> int:
    with sessions() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.scalar(query)


def _finished(sessions, search_id: str) -> dict[str, int]:
    """Keys and ids of the search's trials that are no longer running."""
    with sessions() as session:
        rows = session.execute(
            select(Trial.key, Trial.id).where(Trial.search_id == search_id, Trial.state != TrialState.RUNNING)
        ).all()
    return dict(rows)


def test_resume_after_a_dead_worker_keeps_finished_trials_without_duplicates(sessions):
    search_id = queue(sessions, 1)[0]
    repo.claim_next_search(sessions, "w1", 10, now=T0)
    done = repo.start_trial(sessions, search_id, "fold-0/search", {"fold": 0}, fold=0, stage="search")
    repo.finish_trial(sessions, done, TrialState.COMPLETE, {"ua": 0.5})
    interrupted = repo.start_trial(sessions, search_id, "fold-0/retrain", {"fold": 0}, fold=0, stage="retrain")
    repo.add_steps(sessions, interrupted, [(0, {"loss": 1.0}), (1, {"loss": 0.9})])

    assert repo.requeue_expired(sessions, now=T0 + timedelta(seconds=11)) == [search_id]  # w1 died
    repo.claim_next_search(sessions, "w2", 10, now=T0 + timedelta(seconds=12))

    assert _finished(sessions, search_id) == {"fold-0/search": done}
    assert repo.start_trial(sessions, search_id, "fold-0/search", {"fold": 0}) == done
    assert repo.start_trial(sessions, search_id, "fold-0/retrain", {"fold": 0}) == interrupted
    repo.add_steps(sessions, interrupted, [(1, {"loss": 0.8}), (2, {"loss": 0.7})])  # epoch 1 again
    repo.finish_trial(sessions, interrupted, TrialState.COMPLETE, {"ua": 0.6})

    assert _count(sessions, Trial, search_id=search_id) == 2
    assert repo.get_trial(sessions, done).state == TrialState.COMPLETE  # restarting kept the result
    trial = repo.get_trial(sessions, interrupted)
    assert [(s.step, s.metrics) for s in trial.steps] == [
        (0, {"loss": 1.0}),
        (1, {"loss": 0.8}),
        (2, {"loss": 0.7}),
    ]
    assert _finished(sessions, search_id) == {
        "fold-0/search": done,
        "fold-0/retrain": interrupted,
    }


def test_a_failed_trial_restarts_as_running(sessions):
    search_id = queue(sessions, 1)[0]
    trial_id = repo.start_trial(sessions, search_id, "t", {})
    repo.finish_trial(sessions, trial_id, TrialState.FAILED, {"error": "nan loss"})
    assert repo.start_trial(sessions, search_id, "t", {}) == trial_id
    assert repo.get_trial(sessions, trial_id).state == TrialState.RUNNING
    assert _finished(sessions, search_id) == {}


def test_steps_upsert_never_duplicates(sessions):
    search_id = queue(sessions, 1)[0]
    trial_id = repo.start_trial(sessions, search_id, "t", {})
    repo.add_steps(sessions, trial_id, [(0, {"loss": 3.0}), (0, {"loss": 2.0}), (1, {"loss": 1.5})])
    repo.add_steps(sessions, trial_id, [(1, {"loss": 1.0})])
    assert _count(sessions, TrialStep, trial_id=trial_id) == 2
    assert [s.metrics["loss"] for s in repo.get_trial(sessions, trial_id).steps] == [2.0, 1.0]


def test_finish_trial_fills_metric_columns_genome_and_checksummed_artifacts(sessions, tmp_path: Path):
    search_id = queue(sessions, 1)[0]
    trial_id = repo.start_trial(sessions, search_id, "fold-1/retrain", {"fold": 1}, fold=1, stage="retrain")
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"w" * 1000)
    metrics = {
        "ua": np.float32(0.625),  # numpy values, as the metrics code returns them
        "wa": 0.7,
        "params": np.int64(123_456),
        "ece": math.nan,
        "confusion": np.array([[1, 2], [3, 4]]),
    }
    genome = {"schema_version": 1, "classes": ["angry", "happy"]}
    artifacts = {"weights": weights, "missing": tmp_path / "gone.bin"}
    repo.finish_trial(sessions, trial_id, TrialState.COMPLETE, metrics, genome, artifacts)

    trial = repo.get_trial(sessions, trial_id)
    assert (trial.ua, trial.wa, trial.n_params) == (0.625, 0.7, 123_456)
    assert trial.metrics == {
        "ua": 0.625,
        "wa": 0.7,
        "params": 123456,
        "ece": None,
        "confusion": [[1, 2], [3, 4]],
    }
    assert trial.genome == genome and trial.finished_at is not None
    assert (trial.fold, trial.stage) == (1, "retrain")
    stored = {a.name: a for a in trial.artifacts}
    assert stored["weights"].sha256 == hashlib.sha256(b"w" * 1000).hexdigest()
    assert stored["weights"].size_bytes == 1000 and stored["weights"].path == str(weights.resolve())
    assert stored["missing"].sha256 is None

    weights.write_bytes(b"v" * 10)  # finished again (retrained): the record is replaced, not duplicated
    repo.finish_trial(sessions, trial_id, TrialState.COMPLETE, {"ua": 0.7}, genome, {"weights": weights})
    trial = repo.get_trial(sessions, trial_id)
    assert [(a.name, a.size_bytes) for a in trial.artifacts] == [("missing", None), ("weights", 10)]
    with pytest.raises(ValueError, match="final state"):
        repo.finish_trial(sessions, trial_id, TrialState.RUNNING, {})
    with pytest.raises(repo.NotFoundError):
        repo.finish_trial(sessions, 10**9, TrialState.COMPLETE, {})


def test_search_artifacts_and_unknown_search(sessions, tmp_path: Path):
    search_id = queue(sessions, 1)[0]
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(b"zip")
    repo.add_artifacts(sessions, search_id, {"bundle": bundle})
    repo.add_artifacts(sessions, search_id, {"bundle": bundle})
    trial_id = repo.start_trial(sessions, search_id, "t", {})
    repo.finish_trial(sessions, trial_id, TrialState.COMPLETE, {}, artifacts={"bundle": bundle})
    assert _count(sessions, Artifact, search_id=search_id) == 2  # one for the search, one for the trial
    with pytest.raises(repo.NotFoundError):
        repo.start_trial(sessions, "no-such-search", "t", {})


def test_best_trial_and_events(sessions):
    search_id = queue(sessions, 1)[0]
    for key, state, stage, val_ua in [
        ("a", TrialState.COMPLETE, "retrain", 0.5),
        ("b", TrialState.PRUNED, "retrain", 0.9),
        ("c", TrialState.COMPLETE, "retrain", 0.6),
        ("d", TrialState.COMPLETE, "search", 0.8),
    ]:
        metrics = {"ua": 1 - val_ua, "val_ua": val_ua, "val_wa": 1 - val_ua}  # test scores never choose
        repo.finish_trial(sessions, repo.start_trial(sessions, search_id, key, {}, stage=stage), state, metrics)
    assert repo.best_trial(sessions, search_id).key == "c"
    assert repo.best_trial(sessions, search_id, metric="wa").key == "a"
    with pytest.raises(UnknownNameError, match="ua, wa"):
        repo.best_trial(sessions, search_id, metric="f1")
    assert repo.best_trial(sessions, queue(sessions, 1)[0]) is None

    search_id = queue(sessions, 1)[0]  # one without trial events
    for i in range(5):
        repo.add_event(sessions, search_id, f"line {i}", logging.WARNING if i == 3 else logging.INFO)
    first = repo.events_after(sessions, search_id, limit=2)
    assert [e.message for e in first] == ["line 0", "line 1"]
    rest = repo.events_after(sessions, search_id, after_id=first[-1].id)
    assert [(e.message, e.level) for e in rest] == [("line 2", 20), ("line 3", 30), ("line 4", 20)]


@pytest.fixture
def many_trials(sessions):
    """A search with 40 trials: ties, missing values, three states, two stages, three folds."""
    search_id = queue(sessions, 1)[0]
    rng = random.Random(7)
    for i in range(40):
        stage = "search" if i % 4 else "retrain"
        trial_id = repo.start_trial(sessions, search_id, f"t{i}", {"i": i}, fold=i % 3, stage=stage)
        if i % 5 == 0:
            continue  # still running: no metrics
        state = TrialState.PRUNED if i % 7 == 0 else TrialState.COMPLETE
        ua = rng.choice([0.25, 0.5, 0.5, 0.75, None])
        f1 = rng.choice([0.4, 0.6, 0.6, None])
        latency = rng.choice([1.5, 2.0, 2.0, 3.25, None])
        metrics = {"wa": rng.random(), "params": rng.randint(1000, 5000)} | ({} if ua is None else {"ua": ua})
        metrics |= ({} if f1 is None else {"macro_f1": f1}) | ({} if latency is None else {"latency_ms_p50": latency})
        repo.finish_trial(sessions, trial_id, state, metrics)
    with sessions() as session:
        rows = session.scalars(select(Trial).where(Trial.search_id == search_id)).all()
    return search_id, rows


def _expected(rows, sort: str) -> list[int]:
    name, descending = sort.lstrip("-"), sort.startswith("-")
    valued = sorted((r for r in rows if getattr(r, name) is not None), key=lambda r: (getattr(r, name), r.id))
    missing = sorted((r for r in rows if getattr(r, name) is None), key=lambda r: r.id)
    if descending:
        valued, missing = valued[::-1], missing[::-1]
    return [r.id for r in valued + missing]


@pytest.mark.parametrize("sort", repo.SORTS)
def test_list_trials_pages_through_every_sort(sessions, many_trials, sort):
    search_id, rows = many_trials
    seen, cursor = [], None
    while True:
        page = repo.list_trials(sessions, search_id, sort=sort, limit=7, cursor=cursor)
        assert page.total == 40 and len(page.items) <= 7
        seen += [t.id for t in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == _expected(rows, sort)


def test_list_trials_filters(sessions, many_trials):
    search_id, rows = many_trials
    page = repo.list_trials(sessions, search_id, state=TrialState.RUNNING, limit=100)
    assert [t.id for t in page.items] == sorted(r.id for r in rows if r.state == TrialState.RUNNING)
    assert page.total == 8 and page.next_cursor is None

    good = repo.list_trials(sessions, search_id, min_ua=0.5, state=TrialState.COMPLETE, sort="-ua", limit=3)
    expected = [r for r in rows if r.ua is not None and r.ua >= 0.5 and r.state == TrialState.COMPLETE]
    assert good.total == len(expected)
    assert [t.id for t in good.items] == _expected(expected, "-ua")[:3]

    retrain = repo.list_trials(sessions, search_id, stage="retrain", limit=100)
    assert {t.id for t in retrain.items} == {r.id for r in rows if r.stage == "retrain"}


@pytest.mark.parametrize("sort", ["-macro_f1", "latency_ms"])
def test_list_trials_of_one_fold_pages_by_f1_and_latency(sessions, many_trials, sort):
    search_id, rows = many_trials
    fold_1 = [r for r in rows if r.fold == 1 and r.stage == "search"]
    seen, cursor = [], None
    while True:
        page = repo.list_trials(sessions, search_id, stage="search", fold=1, sort=sort, limit=4, cursor=cursor)
        assert page.total == len(fold_1)
        seen += [t.id for t in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == _expected(fold_1, sort)
    assert repo.list_trials(sessions, search_id, fold=3).total == 0


def test_f1_and_latency_are_copied_from_the_metrics(sessions):
    search_id = queue(sessions, 1)[0]
    trial_id = repo.start_trial(sessions, search_id, "t", {})
    repo.finish_trial(sessions, trial_id, TrialState.COMPLETE, {"macro_f1": np.float32(0.5), "latency_ms_p50": 2})
    trial = repo.get_trial(sessions, trial_id)
    assert (trial.macro_f1, trial.latency_ms) == (0.5, 2.0)
    repo.finish_trial(sessions, trial_id, TrialState.COMPLETE, {"macro_f1": math.nan, "latency_ms_p50": "fast"})
    trial = repo.get_trial(sessions, trial_id)
    assert (trial.macro_f1, trial.latency_ms) == (None, None)


def test_list_trials_rejects_bad_requests(sessions, many_trials):
    search_id, _ = many_trials
    cursor = repo.list_trials(sessions, search_id, sort="-ua", limit=5).next_cursor
    with pytest.raises(ConfigError, match="sorted by '-ua'"):
        repo.list_trials(sessions, search_id, sort="ua", cursor=cursor)
    with pytest.raises(ConfigError, match="invalid cursor"):
        repo.list_trials(sessions, search_id, cursor="not a cursor")
    with pytest.raises(UnknownNameError, match="-n_params"):
        repo.list_trials(sessions, search_id, sort="f1")
    assert repo.list_trials(sessions, "no-such-search").total == 0


def test_search_status_is_stored_as_its_value(sessions, engine):
    search_id = queue(sessions, 1)[0]
    with engine.connect() as connection:
        raw = connection.exec_driver_sql(f"SELECT status FROM searches WHERE id = '{search_id}'").scalar()
    assert raw == SearchStatus.QUEUED.value
