"""Live progress in the study database: trial and epoch events of a real search, epochs replayed by a resume,
extraction progress, and the progress (counts, folds, time left) read back from the trials."""

from __future__ import annotations

import logging
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from nas.dataset import ExtractionLog
from nas.errors import SearchCancelled
from nas.reporting import STEP_GENOME, InMemoryReporter, TrialState
from nas.spec import CorpusSpec, FoldSpec, SpecBase, spec_from_preset
from nas.store import repository as repo
from nas.store.models import Event, EventKind, Search, SearchStatus, Trial
from nas.store.progress import progress_of
from nas.store.reporter import DbReporter, DurableSteps
from tests.conftest import link_actors
from tests.store.test_searches import queue

ACTORS = range(1, 5)  # 2 speaker folds of one man and one woman each
CLASSES = {"02": "calm", "05": "angry"}  # RAVDESS emotion codes in the file names
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, ravdess_root: Path) -> Path:
    """A RAVDESS-layout folder of links to 4 real actors."""
    return link_actors(tmp_path_factory.mktemp("corpus"), ravdess_root, ACTORS)


def tiny_darts(corpus_root: Path) -> SpecBase:
    """A real emoDARTS search in seconds: fold 0 of 2, one small cell, 2 search and 2 training epochs, then the
    final model."""
    corpus = CorpusSpec(name="ravdess", root=corpus_root, classes=tuple(CLASSES.values()))
    overrides = {
        "options.search_epochs": 2,
        "options.train_epochs": 2,
        "options.search_fraction": 0.5,
        "space.cnn_cells": 1,
        "space.nodes": 1,
        "space.seq_hidden": 8,
        "features.pool_to": [20, 32],
    }
    return spec_from_preset("emodarts-demo", corpus, overrides, folds=FoldSpec(n_folds=2, only=(0,)), device="cpu")


def _events(sessions, search_id: str, *kinds: EventKind) -> list[Event]:
    events = repo.events_after(sessions, search_id, limit=10_000)
    return [e for e in events if not kinds or e.kind in kinds]


def _label(event: Event) -> int | str:
    """An epoch event's epoch; what a trial event says happened (started, resumed, complete...)."""
    if event.kind == EventKind.EPOCH:
        return event.data["epoch"]
    return event.message.removeprefix(f"trial {event.data['key']} ").split(":")[0]


# ---------------------------------------------------------------- a real search


def test_a_real_search_reports_extraction_then_each_trial_and_epoch_once_in_order_across_a_resume(
    sessions, small_corpus, tmp_path
):
    from nas.runner import run_search

    spec, out, cache = tiny_darts(small_corpus), tmp_path / "run", tmp_path / "cache"
    search_id = queue(sessions, 1)[0]

    def after_the_first_epoch() -> bool:
        return any(e.kind == EventKind.EPOCH for e in _events(sessions, search_id))

    # As a service worker reports; stopped after the first epoch, then resumed from its checkpoint.
    with closing(DurableSteps(DbReporter(sessions, search_id))) as reporter, pytest.raises(SearchCancelled):
        run_search(spec, out, cache_dir=cache, reporter=reporter, is_cancelled=after_the_first_epoch, progress=False)
    interrupted = repo.list_trials(sessions, search_id).items[0]
    before = [(s.step, s.metrics, s.created_at) for s in repo.get_trial(sessions, interrupted.id).steps]
    assert [step for step, _, _ in before] == [1]
    with closing(DurableSteps(DbReporter(sessions, search_id))) as reporter:
        run_search(spec, out, cache_dir=cache, reporter=reporter, progress=False)

    events = _events(sessions, search_id)
    n_files = 16 * len(ACTORS)
    extraction = [e for e in events if e.message.startswith("features: ")]
    done = next(i for i, e in enumerate(extraction) if e.message == f"features: {n_files}/{n_files} files")
    assert extraction[0].message == f"features: 1/{n_files} files" and done < 12  # a few lines, not one per file
    assert extraction[done].id < min(e.id for e in events if e.kind != EventKind.LOG)  # before the first trial

    search, retrain, final = sorted(repo.list_trials(sessions, search_id).items, key=lambda t: t.id)
    assert (search.id, search.stage, retrain.stage, final.stage) == (interrupted.id, "search", "retrain", "final")
    steps = {t.id: repo.get_trial(sessions, t.id).steps for t in (search, retrain, final)}
    assert [s.step for s in steps[search.id]] == [1, 2] and all(1 <= len(steps[t.id]) <= 2 for t in (retrain, final))
    # Each search epoch's step holds the cells derived at that epoch: the last are the search's genome.
    derived = [s.metrics[STEP_GENOME] for s in steps[search.id]]
    assert all(d["architecture"]["family"] == "emodarts" for d in derived)
    assert derived[-1] == {k: repo.get_trial(sessions, search.id).genome[k] for k in ("architecture", "flags")}
    assert (steps[search.id][0].step, steps[search.id][0].metrics, steps[search.id][0].created_at) == before[0]

    def epochs(trial: Trial) -> list[tuple[EventKind, int, int | str]]:
        return [(EventKind.EPOCH, trial.id, s.step) for s in steps[trial.id]]

    progress = [e for e in events if e.kind != EventKind.LOG]
    assert [(e.kind, e.trial_id, _label(e)) for e in progress] == [
        (EventKind.TRIAL, search.id, "started"),
        (EventKind.EPOCH, search.id, 1),
        (EventKind.TRIAL, search.id, "resumed"),  # epoch 1 is replayed to the reporter here: no event
        (EventKind.EPOCH, search.id, 2),
        (EventKind.TRIAL, search.id, "complete"),
        (EventKind.TRIAL, retrain.id, "started"),
        *epochs(retrain),
        (EventKind.TRIAL, retrain.id, "complete"),
        (EventKind.TRIAL, final.id, "started"),
        *epochs(final),
        (EventKind.TRIAL, final.id, "complete"),
    ]
    trials = {t.id: t for t in (search, retrain, final)}
    for event in progress:
        trial = trials[event.trial_id]
        assert (event.data["key"], event.data["fold"], event.data["stage"]) == (trial.key, trial.fold, trial.stage)
        if event.kind == EventKind.EPOCH:  # the step's own numbers and the time it was computed
            (step,) = (s for s in steps[trial.id] if s.step == event.data["epoch"])
            numbers = {k: v for k, v in step.metrics.items() if k != STEP_GENOME}
            assert (event.data["metrics"], event.created_at) == (numbers, step.created_at)
            assert event.message.startswith(f"{trial.key} epoch {step.step}: ")


# ---------------------------------------------------------------- steps reported again


def test_a_replayed_step_keeps_its_time_and_sends_no_event_and_a_recomputed_one_does(sessions):
    search_id = queue(sessions, 1)[0]
    trial = repo.start_trial(sessions, search_id, "fold-0/search", {}, fold=0, stage="search")
    repo.add_reports(sessions, [repo.StepRow(trial, 1, {"loss": 1.0}, T0), repo.StepRow(trial, 2, {"loss": 0.5}, T0)])

    later = T0 + timedelta(minutes=5)
    replay = [repo.StepRow(trial, 1, {"loss": 1.0}, later), repo.StepRow(trial, 2, {"loss": 0.4}, later)]
    repo.add_reports(sessions, [*replay, repo.StepRow(trial, 3, {"loss": 0.3}, later)])

    steps = [(s.step, s.metrics, s.created_at) for s in repo.get_trial(sessions, trial).steps]
    assert steps == [(1, {"loss": 1.0}, T0), (2, {"loss": 0.4}, later), (3, {"loss": 0.3}, later)]
    epochs = [(e.data["epoch"], e.data["metrics"], e.created_at) for e in _events(sessions, search_id, EventKind.EPOCH)]
    assert epochs == [
        (1, {"loss": 1.0}, T0),
        (2, {"loss": 0.5}, T0),
        (2, {"loss": 0.4}, later),  # computed again, with other values
        (3, {"loss": 0.3}, later),
    ]


def test_numpy_and_nan_values_replayed_count_as_the_same_step(sessions):
    np = pytest.importorskip("numpy")
    search_id = queue(sessions, 1)[0]
    trial = repo.start_trial(sessions, search_id, "t", {})
    values = {"loss": np.float32(0.25), "val_ua": float("nan"), "epoch": np.int64(1)}
    repo.add_steps(sessions, trial, [(1, values)])
    repo.add_steps(sessions, trial, [(1, dict(values))])
    assert len(_events(sessions, search_id, EventKind.EPOCH)) == 1


def test_a_reporter_keeps_log_lines_and_epochs_in_the_order_reported(sessions):
    search_id = queue(sessions, 1)[0]
    reporter = DbReporter(sessions, search_id, flush_every=1000, flush_seconds=60)
    reporter.log("fold 0: test speakers 01, 02")  # buffered when the trial starts: written first
    trial = reporter.start_trial("fold-0/search", {}, fold=0, stage="search")
    reporter.report(trial, 1, {"loss": 1.0})
    reporter.log("between the epochs", logging.WARNING)
    reporter.report(trial, 2, {"loss": 0.5})
    reporter.finish_trial(trial, TrialState.FAILED, {"error": "nan loss"})
    assert [(e.kind, e.message, e.level) for e in _events(sessions, search_id)] == [
        (EventKind.LOG, "fold 0: test speakers 01, 02", logging.INFO),
        (EventKind.TRIAL, "trial fold-0/search started", logging.INFO),
        (EventKind.EPOCH, "fold-0/search epoch 1: loss 1", logging.INFO),
        (EventKind.LOG, "between the epochs", logging.WARNING),
        (EventKind.EPOCH, "fold-0/search epoch 2: loss 0.5", logging.INFO),
        (EventKind.TRIAL, "trial fold-0/search failed", logging.WARNING),
    ]


# ---------------------------------------------------------------- extraction progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_extraction_progress_is_a_few_lines_per_tenth_or_interval():
    reporter, clock = InMemoryReporter(), FakeClock()
    log = ExtractionLog(reporter, min_seconds=1.0, every_seconds=10.0, clock=clock)
    for done in range(1, 101):  # 100 files in 0.5 s each: a tenth every 5 s
        clock.now = done * 0.5
        log("features", done, 100)
    assert reporter.messages == ["features: 1/100 files", *(f"features: {n}/100 files" for n in range(10, 101, 10))]

    reporter, clock = InMemoryReporter(), FakeClock()
    log = ExtractionLog(reporter, min_seconds=1.0, every_seconds=10.0, clock=clock)
    for done in range(1, 1001):  # fast (a cache): tenths pass within a second, only the ends are logged
        clock.now = done * 0.0005
        log("augmented copy 1", done, 1000)
    assert reporter.messages == ["augmented copy 1: 1/1000 files", "augmented copy 1: 1000/1000 files"]

    reporter, clock = InMemoryReporter(), FakeClock()
    log = ExtractionLog(reporter, min_seconds=1.0, every_seconds=10.0, clock=clock)
    for done in range(1, 51):  # slow: 4 s a file, less than a tenth between lines, so every 10 s
        clock.now = done * 4.0
        log("features", done, 1000)
    assert reporter.messages == [
        "features: 1/1000 files",
        *(f"features: {n}/1000 files" for n in (4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46, 49)),
    ]


# ---------------------------------------------------------------- progress and time left


def trial_that_ran(
    sessions, search_id: str, key: str, fold: int | None, stage: str, start: datetime, end: datetime | None
):
    """A trial that ran from `start` to `end` (None: still running)."""
    trial = repo.start_trial(sessions, search_id, key, {}, fold=fold, stage=stage)
    if end is not None:
        repo.finish_trial(sessions, trial, TrialState.COMPLETE, {"ua": 0.5})
    with sessions.begin() as session:
        session.execute(update(Trial).where(Trial.id == trial).values(started_at=start, finished_at=end))
    return trial


def _running_search(sessions, n_folds: int = 4, started: datetime = T0) -> Search:
    search_id = queue(sessions, 1)[0]
    with sessions.begin() as session:
        spec = dict(
            session.get(Search, search_id).spec, folds={"by": "speaker", "n_folds": 6, "only": list(range(n_folds))}
        )
        session.execute(update(Search).where(Search.id == search_id).values(spec=spec))
    repo.claim_next_search(sessions, "w", 30, now=started)
    return repo.get_search(sessions, search_id)


def test_progress_counts_trials_folds_and_running_epochs(sessions):
    search = _running_search(sessions)
    minute = timedelta(minutes=1)
    trial_that_ran(sessions, search.id, "fold-0/search", 0, "search", T0, T0 + 6 * minute)
    trial_that_ran(sessions, search.id, "fold-0/retrain/emodarts", 0, "retrain", T0 + 6 * minute, T0 + 10 * minute)
    running = trial_that_ran(sessions, search.id, "fold-1/search", 1, "search", T0 + 10 * minute, None)
    repo.add_reports(sessions, [repo.StepRow(running, e, {"loss": 1 / e}, T0 + (10 + e) * minute) for e in (1, 2, 3)])

    progress = progress_of(sessions, [search], now=T0 + 14 * minute)[search.id]
    assert progress.trials == {"running": 1, "complete": 2, "pruned": 0, "failed": 0}
    assert (progress.folds_total, progress.folds_done) == (4, 1)
    (current,) = progress.running
    assert (current.id, current.key, current.fold, current.stage) == (running, "fold-1/search", 1, "search")
    assert (current.epoch, current.epoch_at) == (3, T0 + 13 * minute)
    assert progress.elapsed_seconds == 14 * 60
    # Fold 0 took 10 min (its retrain 4): 3 folds left less the 4 min fold 1 has spent, then the final model.
    estimate = progress.estimate
    assert estimate is not None and estimate.seconds == (3 * 10 - 4 + 4) * 60
    assert estimate.at == T0 + 14 * minute + timedelta(seconds=estimate.seconds)
    assert "3 of 4 fold(s) left" in estimate.basis and "final model" in estimate.basis


def test_no_estimate_without_a_fold_timed_in_this_attempt(sessions):
    minute = timedelta(minutes=1)
    fresh = _running_search(sessions)
    trial_that_ran(sessions, fresh.id, "fold-0/search", 0, "search", T0, None)
    assert progress_of(sessions, [fresh], now=T0 + minute)[fresh.id].estimate is None  # nothing finished yet

    resumed = _running_search(sessions, started=T0 + 60 * minute)  # fold 0 ran in an earlier attempt
    trial_that_ran(sessions, resumed.id, "fold-0/search", 0, "search", T0, T0 + 6 * minute)
    trial_that_ran(sessions, resumed.id, "fold-0/retrain/emodarts", 0, "retrain", T0 + 6 * minute, T0 + 10 * minute)
    progress = progress_of(sessions, [resumed], now=T0 + 61 * minute)[resumed.id]
    assert progress.folds_done == 1 and progress.estimate is None

    sessions_folds = _running_search(sessions)
    with sessions.begin() as session:
        spec = dict(session.get(Search, sessions_folds.id).spec, folds={"by": "session", "n_folds": 6, "only": None})
        session.execute(update(Search).where(Search.id == sessions_folds.id).values(spec=spec))
    trial_that_ran(sessions, sessions_folds.id, "fold-0/search", 0, "search", T0, T0 + 6 * minute)
    trial_that_ran(
        sessions, sessions_folds.id, "fold-0/retrain/emodarts", 0, "retrain", T0 + 6 * minute, T0 + 10 * minute
    )
    searched = repo.get_search(sessions, sessions_folds.id)
    progress = progress_of(sessions, [searched], now=T0 + 11 * minute)[searched.id]
    assert (progress.folds_total, progress.folds_done, progress.estimate) == (None, 1, None)


def test_the_final_model_is_estimated_at_a_folds_retrain_and_counted_down(sessions):
    minute = timedelta(minutes=1)
    search = _running_search(sessions, n_folds=1)
    trial_that_ran(sessions, search.id, "fold-0/search", 0, "search", T0, T0 + 6 * minute)
    trial_that_ran(sessions, search.id, "fold-0/retrain/emodarts", 0, "retrain", T0 + 6 * minute, T0 + 10 * minute)
    trial_that_ran(sessions, search.id, "final/retrain/emodarts", None, "final", T0 + 10 * minute, None)
    progress = progress_of(sessions, [search], now=T0 + 11 * minute)[search.id]
    assert progress.estimate is not None and progress.estimate.seconds == 3 * 60  # 4 min, 1 spent


def test_finished_and_queued_searches_have_no_running_trials_nor_estimate(sessions):
    minute = timedelta(minutes=1)
    search = _running_search(sessions)
    trial_that_ran(sessions, search.id, "fold-0/search", 0, "search", T0, None)
    repo.mark_finished(sessions, search.id, SearchStatus.CANCELLED)
    queued = repo.get_search(sessions, queue(sessions, 1)[0])
    cancelled = repo.get_search(sessions, search.id)
    progress = progress_of(sessions, [cancelled, queued], now=T0 + 90 * minute)
    assert progress[cancelled.id].running == [] and progress[cancelled.id].estimate is None
    assert progress[cancelled.id].elapsed_seconds == (cancelled.finished_at - T0).total_seconds()
    assert progress[cancelled.id].trials["failed"] == 1 and not progress[cancelled.id].trials.get("running")
    # (the trial the search was in did not finish: stopping the search marks it failed)
    assert progress[queued.id].elapsed_seconds is None and progress[queued.id].trials["complete"] == 0
