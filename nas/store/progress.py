"""How far searches have got, read from their trials: trial counts, the running trials with their latest
epoch, finished folds, elapsed time, and the time left where the search's own pace gives it.

Two aggregate queries serve any number of searches (a page of the dashboard's list as cheaply as one):
the search's trials grouped by fold, stage and state, and its running trials with their latest step.

The estimate is measured, never assumed: it exists only for a running search of a known number of folds
(speaker folds; session folds are counted only once the corpus is read) of which at least one ran
entirely in the current attempt. The folds left then take as long as those did on average, less what the
fold under way has already spent; when the folds end in a retrain, the model trained on every speaker
after them (stage `final`) takes as long as a fold's retrain did. Folds of an earlier attempt are not
timed: their span includes the time the search was down or queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import fmean
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nas.reporting import TrialStage, TrialState
from nas.spec import FoldSpec
from nas.store.models import FINISHED_SEARCH, Search, SearchStatus, Trial, TrialStep, utcnow
from nas.store.repository import Sessions

# The stages of a fold's model (the trial whose completion ends a fold): a retrained genome, or an ensemble.
FOLD_MODEL_STAGES = (TrialStage.RETRAIN, TrialStage.ENSEMBLE)


@dataclass(frozen=True)
class RunningTrial:
    id: int
    key: str
    fold: int | None
    stage: str | None
    epoch: int | None  # the latest step reported; None before the first
    epoch_at: datetime | None  # when it was computed


@dataclass(frozen=True)
class Estimate:
    seconds: float
    at: datetime
    basis: str  # what it was computed from, for people


@dataclass(frozen=True)
class Progress:
    trials: dict[TrialState, int]  # every state, 0 included
    folds_total: int | None  # None: session folds, counted only once the corpus is read
    folds_done: int
    running: list[RunningTrial]  # empty unless the search is running
    elapsed_seconds: float | None  # of the current attempt (until it finished); None while queued
    estimate: Estimate | None


@dataclass(frozen=True)
class _Group:
    """Trials of one search with the same fold, stage and state."""

    fold: int | None
    stage: str | None
    state: TrialState
    count: int
    first_start: datetime
    last_finish: datetime | None


@dataclass
class _Fold:
    start: datetime  # its first trial's start
    done_at: datetime | None = None  # when its model was complete
    model_stage: str | None = None
    model_start: datetime | None = None


def progress_of(sessions: Sessions, searches: Sequence[Search], now: datetime | None = None) -> dict[str, Progress]:
    """The progress of each of `searches`, by search id."""
    if not searches:
        return {}
    now = now or utcnow()
    running_ids = [s.id for s in searches if s.status == SearchStatus.RUNNING]
    with sessions() as session:
        groups = _groups(session, [s.id for s in searches])
        running = _running_trials(session, running_ids) if running_ids else {}
    return {s.id: _progress(s, groups.get(s.id, []), running.get(s.id, []), now) for s in searches}


def _groups(session: Session, search_ids: list[str]) -> dict[str, list[_Group]]:
    query = (
        select(
            Trial.search_id,
            Trial.fold,
            Trial.stage,
            Trial.state,
            func.count(),
            func.min(Trial.started_at),
            func.max(Trial.finished_at),
        )
        .where(Trial.search_id.in_(search_ids))
        .group_by(Trial.search_id, Trial.fold, Trial.stage, Trial.state)
    )
    groups: dict[str, list[_Group]] = {}
    for search_id, *fields in session.execute(query):
        groups.setdefault(search_id, []).append(_Group(*fields))
    return groups


def _running_trials(session: Session, search_ids: list[str]) -> dict[str, list[RunningTrial]]:
    query = (
        select(
            Trial.search_id,
            Trial.id,
            Trial.key,
            Trial.fold,
            Trial.stage,
            func.max(TrialStep.step),
            func.max(TrialStep.created_at),
        )
        .outerjoin(TrialStep, TrialStep.trial_id == Trial.id)
        .where(Trial.search_id.in_(search_ids), Trial.state == TrialState.RUNNING)
        .group_by(Trial.search_id, Trial.id, Trial.key, Trial.fold, Trial.stage)
        .order_by(Trial.id)
    )
    running: dict[str, list[RunningTrial]] = {}
    for search_id, *fields in session.execute(query):
        running.setdefault(search_id, []).append(RunningTrial(*fields))
    return running


def _progress(search: Search, groups: list[_Group], running: list[RunningTrial], now: datetime) -> Progress:
    counts = dict.fromkeys(TrialState, 0)
    for group in groups:
        counts[group.state] += group.count
    folds = _folds(groups)
    total = folds_total(search.spec)
    return Progress(
        trials=counts,
        folds_total=total,
        folds_done=sum(f.done_at is not None for f in folds.values()),
        running=running,
        elapsed_seconds=_elapsed(search, now),
        estimate=_estimate(search, folds, total, groups, now),
    )


def folds_total(spec: dict[str, Any]) -> int | None:
    """How many folds a stored spec runs, when the spec alone says (speaker folds)."""
    try:
        folds = FoldSpec.model_validate(spec.get("folds") or {})
    except ValidationError:
        return None
    if folds.by != "speaker":
        return None
    return folds.n_folds if folds.only is None else len(set(folds.only))


def _folds(groups: list[_Group]) -> dict[int, _Fold]:
    folds: dict[int, _Fold] = {}
    for group in groups:
        if group.fold is None:
            continue
        fold = folds.setdefault(group.fold, _Fold(group.first_start))
        fold.start = min(fold.start, group.first_start)
        if group.stage in FOLD_MODEL_STAGES and group.state == TrialState.COMPLETE:
            fold.done_at, fold.model_stage, fold.model_start = group.last_finish, group.stage, group.first_start
    return folds


def _elapsed(search: Search, now: datetime) -> float | None:
    if search.started_at is None or search.status in (SearchStatus.QUEUED, SearchStatus.WAITING):
        return None
    end = (search.finished_at or now) if search.status in FINISHED_SEARCH else now
    return (end - search.started_at).total_seconds()


def _estimate(
    search: Search, folds: dict[int, _Fold], total: int | None, groups: list[_Group], now: datetime
) -> Estimate | None:
    started = search.started_at
    if search.status != SearchStatus.RUNNING or started is None or total is None:
        return None
    timed = _timed(folds, started)
    if not timed:
        return None
    fold_seconds = fmean(seconds for seconds, _ in timed)
    left = max(0, total - sum(f.done_at is not None for f in folds.values()))
    remaining = left * fold_seconds
    for fold in folds.values():
        if fold.done_at is None:  # under way: part of its time is spent
            remaining -= min(fold_seconds, _since(max(fold.start, started), now))
    basis = f"{left} of {total} fold(s) left at {fold_seconds:.0f} s each, the mean of {len(timed)} run in this attempt"
    retrains = [seconds for _, seconds in timed if seconds is not None]
    final = {g.state: g for g in groups if g.stage == TrialStage.FINAL}
    if retrains and TrialState.COMPLETE not in final:
        final_seconds = fmean(retrains)
        remaining += final_seconds
        if TrialState.RUNNING in final:
            remaining -= min(final_seconds, _since(max(final[TrialState.RUNNING].first_start, started), now))
        basis += f", then the final model at {final_seconds:.0f} s, the mean of a fold's retrain"
    remaining = max(0.0, remaining)
    return Estimate(remaining, now + timedelta(seconds=remaining), basis)


def _timed(folds: dict[int, _Fold], started: datetime) -> list[tuple[float, float | None]]:
    """(the fold's seconds, its retrain's seconds or None) of each fold done entirely since `started`."""
    timed = []
    for fold in folds.values():
        if fold.done_at is None or fold.model_start is None or fold.start < started:
            continue
        retrain = _since(fold.model_start, fold.done_at) if fold.model_stage == TrialStage.RETRAIN else None
        timed.append((_since(fold.start, fold.done_at), retrain))
    return timed


def _since(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
