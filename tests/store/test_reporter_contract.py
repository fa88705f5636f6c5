"""The Reporter contract, checked on every implementation (in memory; database on both backends)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nas.features.spec import FeatureSpec
from nas.genome import CnnBiLstmAttArchitecture, Genome
from nas.reporting import InMemoryReporter, Reporter, TrialState
from nas.store import repository as repo
from nas.store.db import make_engine, migrate, session_factory
from nas.store.models import Event, TrialStep
from nas.store.reporter import DbReporter
from tests.conftest import database
from tests.store.test_searches import queue

GENOME = Genome(input=FeatureSpec(), architecture=CnnBiLstmAttArchitecture(), classes=("angry", "happy"))


def check_reporter_contract(reporter: Reporter, tmp_path: Path) -> tuple[int, int, int]:
    """What a strategy may rely on, whichever Reporter it was given; returns the trial ids it opened."""
    search = reporter.start_trial("fold-0/search", {"nodes": 2}, fold=0, stage="search")
    retrain = reporter.start_trial("fold-0/retrain", {"family": "emodarts"}, fold=0, stage="retrain")
    assert isinstance(search, int) and isinstance(retrain, int) and search != retrain
    assert reporter.start_trial("fold-0/search", {"nodes": 2}, fold=0, stage="search") == search  # keyed

    for epoch in range(3):
        reporter.report(search, epoch, {"loss": 1.0 / (epoch + 1), "val_ua": 0.3 + epoch / 10})
    reporter.report(search, 2, {"loss": 0.25, "val_ua": 0.6})  # a resume replaying epoch 2: overwrites
    reporter.log("derived a genome")
    reporter.log("careful", logging.WARNING)
    reporter.finish_trial(search, TrialState.COMPLETE, {"alphas": [[0.5, 0.5]], "flags": []}, GENOME)
    # A resumed search that starts a finished trial again gets the same trial back.
    assert reporter.start_trial("fold-0/search", {"nodes": 2}, fold=0, stage="search") == search

    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"\0" * 64)
    reporter.report(retrain, 0, {"loss": 2.0})
    metrics = {"ua": 0.55, "wa": 0.6, "params": 1234, "test_speakers": ["01", "02"]}
    reporter.finish_trial(retrain, TrialState.PRUNED, metrics, GENOME, {"weights": weights})
    other = reporter.start_trial("fold-1/search", {"nodes": 2}, fold=1, stage="search")
    assert other not in (search, retrain)
    return search, retrain, other


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def reporter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reporter]:
    if request.param == "memory":
        yield InMemoryReporter()
        return
    with database(request.param, request, tmp_path) as url:
        engine = make_engine(url)
        migrate(engine)
        sessions = session_factory(engine)
        with DbReporter(sessions, queue(sessions, 1)[0]) as reporter:
            yield reporter
        engine.dispose()


def test_reporter_contract(reporter: Reporter, tmp_path: Path):
    check_reporter_contract(reporter, tmp_path)


def test_in_memory_reporter_keeps_what_the_contract_reported(tmp_path: Path):
    reporter = InMemoryReporter()
    search, retrain, other = check_reporter_contract(reporter, tmp_path)
    trials = reporter.trials
    assert [(trials[t].fold, trials[t].stage) for t in (search, retrain, other)] == [
        (0, "search"),
        (0, "retrain"),
        (1, "search"),
    ]
    assert [step for step, _ in trials[search].steps] == [0, 1, 2]  # keyed by step: no duplicate
    assert dict(trials[search].steps)[2] == {"loss": 0.25, "val_ua": 0.6}
    assert (trials[search].state, trials[search].genome) == (TrialState.COMPLETE, GENOME)
    assert (trials[retrain].state, trials[retrain].metrics["ua"]) == (TrialState.PRUNED, 0.55)
    assert trials[other].state == TrialState.RUNNING
    assert reporter.messages[-2:] == ["derived a genome", "careful"]


def test_db_reporter_stores_what_the_contract_reported(sessions, tmp_path: Path):
    search_id = queue(sessions, 1)[0]
    with DbReporter(sessions, search_id) as reporter:
        check_reporter_contract(reporter, tmp_path)
    page = repo.list_trials(sessions, search_id, sort="id")
    search, retrain, other = page.items
    assert [(t.fold, t.stage) for t in (search, retrain, other)] == [(0, "search"), (0, "retrain"), (1, "search")]
    assert Genome.model_validate(repo.get_trial(sessions, search.id).genome) == GENOME
    steps = repo.get_trial(sessions, search.id).steps
    assert [s.step for s in steps] == [0, 1, 2]  # keyed by (trial, step): the replayed epoch overwrote
    assert steps[2].metrics == {"loss": 0.25, "val_ua": 0.6}
    stored = repo.get_trial(sessions, retrain.id)
    assert (stored.state, stored.ua, stored.n_params) == (TrialState.PRUNED, 0.55, 1234)
    assert stored.artifacts[0].size_bytes == 64
    # Every report is an event, in the order reported; the replayed epoch 2 is one event (the last values).
    events = [(e.kind, e.trial_id, e.message, e.level) for e in repo.events_after(sessions, search_id)]
    assert events == [
        ("trial", search.id, "trial fold-0/search started", 20),
        ("trial", retrain.id, "trial fold-0/retrain started", 20),
        ("trial", search.id, "trial fold-0/search resumed", 20),
        ("epoch", search.id, "fold-0/search epoch 0: loss 1, val_ua 0.3", 20),
        ("epoch", search.id, "fold-0/search epoch 1: loss 0.5, val_ua 0.4", 20),
        ("epoch", search.id, "fold-0/search epoch 2: loss 0.25, val_ua 0.6", 20),
        ("log", None, "derived a genome", 20),
        ("log", None, "careful", 30),
        ("trial", search.id, "trial fold-0/search complete", 20),
        ("trial", search.id, "trial fold-0/search resumed", 20),
        ("epoch", retrain.id, "fold-0/retrain epoch 0: loss 2", 20),
        ("trial", retrain.id, "trial fold-0/retrain pruned: UA 0.550", 20),
        ("trial", other.id, "trial fold-1/search started", 20),
    ]


def _rows(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_db_reporter_batches_writes(sessions):
    search_id = queue(sessions, 1)[0]
    reporter = DbReporter(sessions, search_id, flush_every=4, flush_seconds=60)
    trial = reporter.start_trial("t", {})
    for step in range(3):
        reporter.report(trial, step, {"loss": float(step)})
    assert _rows(sessions, TrialStep) == 0  # waiting for a full batch
    reporter.log("fourth item fills the batch")
    assert _rows(sessions, TrialStep) == 3 and _rows(sessions, Event) > 0

    reporter.report(trial, 3, {"loss": 3.0})
    reporter.finish_trial(trial, TrialState.COMPLETE, {"ua": 0.5})  # writes its steps first
    assert _rows(sessions, TrialStep) == 4
    reporter.report(trial, 4, {"loss": 4.0})
    reporter.close()
    assert _rows(sessions, TrialStep) == 5


def test_db_reporter_flushes_after_a_quiet_interval(sessions):
    search_id = queue(sessions, 1)[0]
    reporter = DbReporter(sessions, search_id, flush_every=1000, flush_seconds=0.2)
    reporter.report(reporter.start_trial("t", {}), 0, {"loss": 1.0})
    deadline = time.monotonic() + 10
    while _rows(sessions, TrialStep) == 0:
        assert time.monotonic() < deadline, "the buffered step was never written"
        time.sleep(0.05)
    reporter.close()


def test_db_reporter_keeps_reports_when_the_database_refuses(sessions, monkeypatch):
    search_id = queue(sessions, 1)[0]
    reporter = DbReporter(sessions, search_id, flush_every=2, flush_seconds=60)
    trial = reporter.start_trial("t", {})
    real = repo.add_reports

    def unavailable(*args, **kwargs):
        raise ConnectionError("database restarting")

    monkeypatch.setattr(repo, "add_reports", unavailable)
    reporter.report(trial, 0, {"loss": 1.0})
    reporter.report(trial, 1, {"loss": 0.5})  # a full batch: the write fails, training goes on
    with pytest.raises(ConnectionError):
        reporter.flush()
    monkeypatch.setattr(repo, "add_reports", real)
    reporter.close()
    assert [s.step for s in repo.get_trial(sessions, trial).steps] == [0, 1]
