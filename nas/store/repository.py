"""Every read and write of the study database, as plain functions over a `sessionmaker`.

Each function is one short transaction (writes take the SQLite write lock up front, see
`db.write_session`), so callers never hold a transaction across slow work. Returned rows are
detached from their session: their columns are loaded, relationships only where documented.

The queue: a search is `queued` until a worker claims it (`claim_next_search`), which makes it
`running` under a lease the worker renews (`renew_lease`). A lease that runs out (the worker died)
puts the search back in the queue (`requeue_expired`); it resumes from its checkpoints, and
`start_trial` being keyed means finished trials are neither lost nor duplicated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload, sessionmaker

from nas.errors import ConfigError, SernasError, UnknownNameError
from nas.reporting import TrialStage, TrialState
from nas.store.db import to_json, write_session
from nas.store.models import (
    CLAIMED_SEARCH,
    FINISHED_SEARCH,
    Artifact,
    Event,
    EventKind,
    Search,
    SearchStatus,
    Trial,
    TrialStep,
    utcnow,
)

Sessions = sessionmaker[Session]


class StoreError(SernasError):
    """A request the study database cannot satisfy as asked."""


class NotFoundError(StoreError, LookupError):
    """No search or trial has that id."""


class InvalidTransitionError(StoreError, ValueError):
    """The search is not in a state that allows this (e.g. resuming a completed search)."""


class IdempotencyConflictError(StoreError, ValueError):
    """An idempotency key was reused for a different submission."""


# ---------------------------------------------------------------- searches


@dataclass(frozen=True)
class SearchPage:
    items: list[Search]
    total: int


def create_search(
    sessions: Sessions,
    spec: dict[str, Any],
    name: str,
    strategy: str,
    idempotency_key: str | None = None,
) -> Search:
    """Queue a new search; with an `idempotency_key` already used, return that search instead."""
    search = Search(spec=spec, name=name, strategy=strategy, idempotency_key=idempotency_key)
    try:
        with write_session(sessions) as session:
            existing = _by_idempotency_key(session, idempotency_key)
            if existing is not None:
                return _same_submission(existing, spec, name, strategy)
            session.add(search)
    except IntegrityError:
        # PostgreSQL: a concurrent submission with the same key committed between our check and
        # our insert (SQLite cannot get here: its write lock serialises the check and the insert).
        if idempotency_key is None:
            raise
        with sessions() as session:
            existing = _by_idempotency_key(session, idempotency_key)
        if existing is None:  # some other constraint failed
            raise
        return _same_submission(existing, spec, name, strategy)
    return search


def _by_idempotency_key(session: Session, key: str | None) -> Search | None:
    if key is None:
        return None
    return session.scalars(select(Search).where(Search.idempotency_key == key)).first()


def _same_submission(existing: Search, spec: dict[str, Any], name: str, strategy: str) -> Search:
    if (existing.spec, existing.name, existing.strategy) != (json.loads(to_json(spec)), name, strategy):
        raise IdempotencyConflictError(
            f"idempotency key {existing.idempotency_key!r} was already used for another submission "
            f"(search {existing.id}); send a new key for a different search"
        )
    return existing


def get_search(sessions: Sessions, search_id: str) -> Search | None:
    with sessions() as session:
        return session.get(Search, search_id)


def list_searches(
    sessions: Sessions, status: SearchStatus | None = None, limit: int = 50, offset: int = 0
) -> SearchPage:
    """Newest first."""
    where = [] if status is None else [Search.status == status]
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(Search).where(*where)) or 0
        items = session.scalars(
            select(Search)
            .where(*where)
            .order_by(Search.created_at.desc(), Search.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    return SearchPage(list(items), total)


def claim_next_search(
    sessions: Sessions, owner: str, lease_seconds: float, now: datetime | None = None
) -> Search | None:
    """Atomically take the oldest queued search for `owner`, or None when the queue is empty.

    PostgreSQL: the candidate row is locked with FOR UPDATE SKIP LOCKED, so concurrent claimers
    take different searches without waiting for each other. SQLite: the transaction holds the
    database write lock. Either way the UPDATE only applies while the row is still queued, and
    the row it returns is the proof of the claim.
    """
    now = now or utcnow()
    with write_session(sessions) as session:
        while True:
            candidate = session.scalars(
                select(Search.id)
                .where(Search.status == SearchStatus.QUEUED)
                .order_by(Search.created_at, Search.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if candidate is None:
                return None
            claimed = session.scalars(
                update(Search)
                .where(Search.id == candidate, Search.status == SearchStatus.QUEUED)
                .values(
                    status=SearchStatus.RUNNING,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    heartbeat_at=now,
                    started_at=now,
                    attempts=Search.attempts + 1,
                )
                .returning(Search)
                .execution_options(populate_existing=True)
            ).first()
            if claimed is not None:
                session.add(_event(candidate, f"claimed by {owner} (attempt {claimed.attempts})"))
                return claimed


def mark_waiting(sessions: Sessions, search_id: str, owner: str, why: str) -> bool:
    """A search `owner` claimed waits for resources that no node has free now (`why`): it is submitted to Ray,
    which starts it when they appear (`start_waiting`). False: `owner` no longer holds it."""
    with write_session(sessions) as session:
        waiting = session.execute(
            update(Search)
            .where(Search.id == search_id, Search.status == SearchStatus.RUNNING, Search.lease_owner == owner)
            .values(status=SearchStatus.WAITING)
            .execution_options(synchronize_session=False)
        )
        if waiting.rowcount != 1:
            return False
        session.add(_event(search_id, f"waiting for resources: {why}"))
        return True


def start_waiting(sessions: Sessions, search_id: str, owner: str, now: datetime | None = None) -> bool:
    """The worker of a waiting search started (Ray found it the resources): the search runs from now.
    False: it is not `owner`'s waiting search any more (cancelled meanwhile, or its lease was lost)."""
    now = now or utcnow()
    with write_session(sessions) as session:
        started = session.execute(
            update(Search)
            .where(
                Search.id == search_id,
                Search.status == SearchStatus.WAITING,
                Search.lease_owner == owner,
                Search.cancel_requested.is_(False),
            )
            .values(status=SearchStatus.RUNNING, started_at=now, heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        if started.rowcount != 1:
            return False
        session.add(_event(search_id, "resources found: running"))
        return True


def renew_lease(
    sessions: Sessions, search_id: str, owner: str, lease_seconds: float, now: datetime | None = None
) -> bool:
    """Extend `owner`'s lease (of a running or waiting search). False means stop: the lease was lost, or a
    cancel was requested."""
    now = now or utcnow()
    with write_session(sessions) as session:
        renewed = session.execute(
            update(Search)
            .where(
                Search.id == search_id,
                Search.status.in_(CLAIMED_SEARCH),
                Search.lease_owner == owner,
                Search.cancel_requested.is_(False),
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        return renewed.rowcount == 1


def requeue_expired(sessions: Sessions, now: datetime | None = None, max_attempts: int | None = None) -> list[str]:
    """Put running (or waiting) searches whose lease ran out back in the queue; returns their ids.

    A search whose cancel was requested is cancelled instead, and one that has already been
    claimed `max_attempts` times fails (a search that kills its worker must not loop forever).
    """
    now = now or utcnow()
    requeued = []
    with write_session(sessions) as session:
        expired = session.scalars(
            select(Search)
            .where(Search.status.in_(CLAIMED_SEARCH), Search.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()
        for search in expired:
            lost = f"the lease of {search.lease_owner} expired"
            search.lease_owner = search.lease_expires_at = None
            if search.cancel_requested:
                search.status, search.finished_at = SearchStatus.CANCELLED, now
                session.add(_event(search.id, f"{lost}; cancelled as requested"))
            elif max_attempts is not None and search.attempts >= max_attempts:
                search.status, search.finished_at = SearchStatus.FAILED, now
                search.error = f"{lost} after {search.attempts} attempts; giving up (resume to retry)"
                session.add(_event(search.id, search.error, logging.ERROR))
            else:
                search.status = SearchStatus.QUEUED
                requeued.append(search.id)
                session.add(_event(search.id, f"{lost}; re-queued", logging.WARNING))
    return requeued


def request_cancel(sessions: Sessions, search_id: str) -> Search:
    """Cancel a queued or waiting search at once (nothing of it runs; its dispatcher withdraws a waiting one's
    Ray task); flag a running one (its runner stops within a lease renewal)."""
    with write_session(sessions) as session:
        search = _locked_search(session, search_id)
        if search.status in (SearchStatus.QUEUED, SearchStatus.WAITING):
            search.status, search.finished_at = SearchStatus.CANCELLED, utcnow()
            search.lease_owner = search.lease_expires_at = None
            session.add(_event(search_id, "cancelled before it started"))
        elif search.status == SearchStatus.RUNNING and not search.cancel_requested:
            search.cancel_requested = True
            session.add(_event(search_id, "cancel requested"))
        return search


def mark_finished(
    sessions: Sessions,
    search_id: str,
    status: SearchStatus,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
    owner: str | None = None,
) -> bool:
    """Record the end of a queued, waiting or running search. With `owner`, only while that worker holds it
    (False: the lease was lost and another worker may be running the search now)."""
    if status not in FINISHED_SEARCH:
        raise ValueError(f"a search finishes as one of {[s.value for s in FINISHED_SEARCH]}, not {status!r}")
    with write_session(sessions) as session:
        where = [Search.id == search_id, Search.status.in_([SearchStatus.QUEUED, *CLAIMED_SEARCH])]
        if owner is not None:
            where.append(Search.lease_owner == owner)
        finished = session.execute(
            update(Search)
            .where(*where)
            .values(
                status=status,
                summary=summary,
                error=error,
                finished_at=utcnow(),
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if finished.rowcount != 1:
            return False
        if status != SearchStatus.COMPLETED:
            # The trial the search was in when it stopped did not finish: say so rather than leave it running.
            # A resumed search takes it up again under the same key (start_trial reopens failed trials).
            session.execute(
                update(Trial)
                .where(Trial.search_id == search_id, Trial.state == TrialState.RUNNING)
                .values(state=TrialState.FAILED, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        level = logging.ERROR if status == SearchStatus.FAILED else logging.INFO
        session.add(_event(search_id, f"{status.value}: {error}" if error else status.value, level))
        return True


def resume(sessions: Sessions, search_id: str) -> Search:
    """Queue a failed or cancelled search again; it continues from its checkpoints and finished trials.

    Resuming a search that is already queued, waiting or running changes nothing.
    """
    with write_session(sessions) as session:
        search = _locked_search(session, search_id)
        if search.status == SearchStatus.COMPLETED:
            raise InvalidTransitionError(f"search {search_id} is completed; there is nothing to resume")
        if search.status in (SearchStatus.FAILED, SearchStatus.CANCELLED):
            search.status = SearchStatus.QUEUED
            search.cancel_requested = False
            search.error = search.finished_at = None
            session.add(_event(search_id, "resumed: queued again"))
        return search


def set_result_dir(sessions: Sessions, search_id: str, result_dir: Path) -> None:
    with write_session(sessions) as session:
        _locked_search(session, search_id).result_dir = str(result_dir)


def _locked_search(session: Session, search_id: str) -> Search:
    search = session.get(Search, search_id, with_for_update=True)
    if search is None:
        raise NotFoundError(f"no search with id {search_id!r}")
    return search


# ---------------------------------------------------------------- trials


def start_trial(
    sessions: Sessions,
    search_id: str,
    key: str,
    params: dict[str, Any],
    fold: int | None = None,
    stage: str | None = None,
) -> int:
    """Open the trial `key` of a search and return its id, with a `trial` event saying so.

    Idempotent: a resumed search that starts `key` again gets the same id and row back (its event
    says "resumed"). A failed trial restarts as running; a completed or pruned one keeps its result
    until finished anew.
    """
    try:
        with write_session(sessions) as session:
            trial = session.scalars(
                select(Trial).where(Trial.search_id == search_id, Trial.key == key).with_for_update()
            ).first()
            resumed = trial is not None
            if trial is None:
                trial = Trial(search_id=search_id, key=key, params=params, fold=fold, stage=stage)
                session.add(trial)
                session.flush()
            elif trial.state == TrialState.FAILED:
                trial.state, trial.finished_at = TrialState.RUNNING, None
            session.add(_trial_event(trial, "resumed" if resumed else "started"))
            return trial.id
    except IntegrityError:
        # The same key started concurrently (PostgreSQL only, see create_search); or no such search.
        with sessions() as session:
            trial_id = session.scalar(select(Trial.id).where(Trial.search_id == search_id, Trial.key == key))
        if trial_id is None:
            raise NotFoundError(f"no search with id {search_id!r}") from None
        return trial_id


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """The finite numbers among `metrics` (numpy's included)."""
    return {
        k: v for k, v in metrics.items() if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    }


def _trial_event(trial: Trial, what: str, metrics: dict[str, Any] | None = None) -> Event:
    """The `trial` event of `trial` as it is now; `metrics`: its final metrics, numbers only (the rest,
    e.g. architecture weights or confusion matrices, is on the trial itself)."""
    data: dict[str, Any] = {"key": trial.key, "fold": trial.fold, "stage": trial.stage, "state": trial.state.value}
    message = f"trial {trial.key} {what}"
    if metrics is not None:
        data["metrics"] = _numbers(metrics)
        if "ua" in data["metrics"]:
            message += f": UA {data['metrics']['ua']:.3f}"
    level = logging.WARNING if trial.state == TrialState.FAILED else logging.INFO
    return Event(
        search_id=trial.search_id, trial_id=trial.id, kind=EventKind.TRIAL, level=level, message=message, data=data
    )


@dataclass(frozen=True)
class StepRow:
    trial_id: int
    step: int
    metrics: dict[str, Any]
    created_at: datetime = field(default_factory=utcnow)  # when the step was reported (computed)


@dataclass(frozen=True)
class EventRow:
    search_id: str
    message: str
    level: int = logging.INFO
    trial_id: int | None = None
    created_at: datetime = field(default_factory=utcnow)


Report = StepRow | EventRow


def add_steps(sessions: Sessions, trial_id: int, steps: Iterable[tuple[int, dict[str, Any]]]) -> None:
    """Store per-step values (see `add_reports` for a step reported again)."""
    add_reports(sessions, [StepRow(trial_id, step, metrics) for step, metrics in steps])


def add_event(
    sessions: Sessions, search_id: str, message: str, level: int = logging.INFO, trial_id: int | None = None
) -> None:
    add_reports(sessions, [EventRow(search_id, message, level, trial_id)])


def add_reports(sessions: Sessions, reports: Sequence[Report]) -> None:
    """Steps and log lines in one transaction, in the order given: the reporter's batched write.

    Each step computed now is stored with an `epoch` event at its place among the log lines. A step
    reported again with the values already stored is a resume replaying a restored epoch: nothing is
    written, so the step keeps the time it was computed and the feed does not show the epoch twice.
    A step reported again with other values was computed again: it replaces the stored one (values
    and time) and gets an event. Within one batch the last report of a step wins.
    """
    latest = {(r.trial_id, r.step): r for r in reports if isinstance(r, StepRow)}
    with write_session(sessions) as session:
        fresh = _computed_now(session, latest)
        _upsert_steps(session, list(fresh.values()))
        trials = _trial_labels(session, {r.trial_id for r in fresh.values()})
        for report in reports:
            if isinstance(report, EventRow):
                session.add(_log_event(report))
            elif fresh.get((report.trial_id, report.step)) is report:
                session.add(_epoch_event(trials[report.trial_id], report))


def _computed_now(session: Session, steps: dict[tuple[int, int], StepRow]) -> dict[tuple[int, int], StepRow]:
    """The steps whose values are not stored yet (new, or changed since)."""
    if not steps:
        return {}
    stored = {
        (trial_id, step): metrics
        for trial_id, step, metrics in session.execute(
            select(TrialStep.trial_id, TrialStep.step, TrialStep.metrics).where(
                TrialStep.trial_id.in_({t for t, _ in steps}), TrialStep.step.in_({s for _, s in steps})
            )
        )
    }
    # Compared as stored: the JSON column turns numpy numbers into Python ones and NaN into null.
    return {key: row for key, row in steps.items() if stored.get(key) != json.loads(to_json(row.metrics))}


def _upsert_steps(session: Session, steps: list[StepRow]) -> None:
    if not steps:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    upsert = insert(TrialStep).values(
        [{"trial_id": r.trial_id, "step": r.step, "metrics": r.metrics, "created_at": r.created_at} for r in steps]
    )
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[TrialStep.trial_id, TrialStep.step],
            set_={"metrics": upsert.excluded.metrics, "created_at": upsert.excluded.created_at},
        )
    )


# What an epoch event says about its trial: id, search_id, key, fold and stage.
_TrialLabel = Row[tuple[int, str, str, int | None, str | None]]


def _trial_labels(session: Session, ids: set[int]) -> dict[int, _TrialLabel]:
    if not ids:
        return {}
    labels = select(Trial.id, Trial.search_id, Trial.key, Trial.fold, Trial.stage).where(Trial.id.in_(ids))
    return {row.id: row for row in session.execute(labels)}


def _log_event(row: EventRow) -> Event:
    return Event(
        search_id=row.search_id, trial_id=row.trial_id, level=row.level, message=row.message, created_at=row.created_at
    )


def _epoch_event(trial: _TrialLabel, step: StepRow) -> Event:
    """The `epoch` event of a step: its numbers only (the rest, e.g. the architecture a DARTS epoch derived,
    stays on the step, so the live feed stays small)."""
    numbers = _numbers(step.metrics)
    values = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items())
    return Event(
        search_id=trial.search_id,
        trial_id=trial.id,
        kind=EventKind.EPOCH,
        level=logging.INFO,
        message=f"{trial.key} epoch {step.step}" + (f": {values}" if values else ""),
        data={"key": trial.key, "fold": trial.fold, "stage": trial.stage, "epoch": step.step, "metrics": numbers},
        created_at=step.created_at,
    )


def finish_trial(
    sessions: Sessions,
    trial_id: int,
    state: TrialState,
    metrics: dict[str, Any],
    genome: dict[str, Any] | None = None,
    artifacts: dict[str, Path] | None = None,
) -> None:
    """Close a trial with its final metrics, genome JSON and files (checksummed here).

    `ua`, `wa`, `macro_f1`, the parameter count (`params` in the metrics) and the median latency
    (`latency_ms_p50`) are copied into their columns. Finishing a trial again replaces its result and its
    artifacts of the same names.
    """
    if state == TrialState.RUNNING:
        raise ValueError("finish_trial needs a final state (complete, pruned or failed)")
    files = [_describe(name, Path(path)) for name, path in (artifacts or {}).items()]  # hash outside the lock
    with write_session(sessions) as session:
        trial = session.get(Trial, trial_id, with_for_update=True)
        if trial is None:
            raise NotFoundError(f"no trial with id {trial_id}")
        trial.state, trial.metrics, trial.genome, trial.finished_at = state, metrics, genome, utcnow()
        trial.ua, trial.wa = _finite(metrics.get("ua")), _finite(metrics.get("wa"))
        trial.macro_f1, trial.latency_ms = _finite(metrics.get("macro_f1")), _finite(metrics.get("latency_ms_p50"))
        n_params = _finite(metrics.get("params"))
        trial.n_params = None if n_params is None else int(n_params)
        _put_artifacts(session, trial.search_id, trial_id, files)
        session.add(_trial_event(trial, state.value, metrics))


def add_artifacts(sessions: Sessions, search_id: str, artifacts: dict[str, Path], trial_id: int | None = None) -> None:
    """Record files of a search (or of one of its trials), replacing earlier records of the same names."""
    files = [_describe(name, Path(path)) for name, path in artifacts.items()]
    with write_session(sessions) as session:
        _put_artifacts(session, search_id, trial_id, files)


def _put_artifacts(session: Session, search_id: str, trial_id: int | None, files: list[Artifact]) -> None:
    if not files:
        return
    owner = Artifact.trial_id.is_(None) if trial_id is None else Artifact.trial_id == trial_id
    stale = session.scalars(
        select(Artifact).where(Artifact.search_id == search_id, owner, Artifact.name.in_([f.name for f in files]))
    ).all()
    for artifact in stale:
        session.delete(artifact)
    for artifact in files:
        artifact.search_id, artifact.trial_id = search_id, trial_id
    session.add_all(files)


def _describe(name: str, path: Path) -> Artifact:
    path = path.resolve()
    if not path.is_file():  # recorded anyway: the trial's result matters more than one missing file
        return Artifact(name=name, path=str(path))
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return Artifact(name=name, path=str(path), sha256=digest.hexdigest(), size_bytes=path.stat().st_size)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def get_trial(sessions: Sessions, trial_id: int) -> Trial | None:
    """The trial with its `steps` (in step order) and `artifacts` loaded."""
    with sessions() as session:
        return session.get(Trial, trial_id, options=[selectinload(Trial.steps), selectinload(Trial.artifacts)])


def best_trial(sessions: Sessions, search_id: str, metric: str = "ua") -> Trial | None:
    """The model the search chose, on validation scores only (test speakers are scored once and choose
    nothing): its final model, trained on every speaker, once there; until then the completed trial that
    keeps weights (a fold's retrained genome, an ensemble) with the highest validation `metric` (ua or wa),
    the earliest on a tie."""
    if metric not in ("ua", "wa"):
        raise UnknownNameError("metric", metric, ["ua", "wa"])
    validation = Trial.metrics[f"val_{metric}"].as_float()
    with sessions() as session:
        return session.scalars(
            select(Trial)
            .where(
                Trial.search_id == search_id,
                Trial.state == TrialState.COMPLETE,
                Trial.stage != TrialStage.SEARCH,
                validation.is_not(None),
            )
            .order_by((Trial.stage == TrialStage.FINAL).desc(), validation.desc(), Trial.id)
            .limit(1)
        ).first()


def events_after(sessions: Sessions, search_id: str, after_id: int = 0, limit: int = 100) -> list[Event]:
    """Events of a search with id > `after_id`, oldest first (the live feed polls with the last id)."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Event).where(Event.search_id == search_id, Event.id > after_id).order_by(Event.id).limit(limit)
            )
        )


def _event(search_id: str, message: str, level: int = logging.INFO) -> Event:
    return Event(search_id=search_id, level=level, message=message)


# ---------------------------------------------------------------- trial listing


SORT_COLUMNS: dict[str, InstrumentedAttribute[Any]] = {
    "id": Trial.id,
    "ua": Trial.ua,
    "wa": Trial.wa,
    "n_params": Trial.n_params,
    "macro_f1": Trial.macro_f1,
    "latency_ms": Trial.latency_ms,
}
SORTS = tuple(f"{sign}{name}" for name in SORT_COLUMNS for sign in ("", "-"))


@dataclass(frozen=True)
class TrialPage:
    items: list[Trial]
    total: int  # all trials matching the filters, not just this page
    next_cursor: str | None  # pass back as `cursor` for the next page; None on the last page


def list_trials(
    sessions: Sessions,
    search_id: str,
    state: TrialState | None = None,
    stage: str | None = None,
    fold: int | None = None,
    min_ua: float | None = None,
    sort: str = "id",
    limit: int = 50,
    cursor: str | None = None,
) -> TrialPage:
    """One page of a search's trials of `state`, `stage` and `fold` (each when given), sorted by `sort` (a SORTS
    entry; "-" for descending).

    Keyset paging: a page costs the same at trial 100,000 as at trial 1. Trials without a value
    for the sort column (running ones, say) come after all others in either direction; ties are
    broken by id in the same direction.
    """
    if sort not in SORTS:
        raise UnknownNameError("trial sort", sort, SORTS)
    if limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    column, descending = SORT_COLUMNS[sort.lstrip("-")], sort.startswith("-")
    after = _decode_cursor(cursor, sort) if cursor else None
    where: list[ColumnElement[bool]] = [Trial.search_id == search_id]
    if state is not None:
        where.append(Trial.state == state)
    if stage is not None:
        where.append(Trial.stage == stage)
    if fold is not None:
        where.append(Trial.fold == fold)
    if min_ua is not None:
        where.append(Trial.ua >= min_ua)

    def beyond(lhs: Any, rhs: Any) -> ColumnElement[bool]:
        return lhs < rhs if descending else lhs > rhs

    def ordered(*columns: Any) -> list[Any]:
        return [c.desc() if descending else c.asc() for c in columns]

    # Two index-friendly segments (rows with a value, then rows without) instead of NULLS LAST,
    # which PostgreSQL cannot read off a plain index in descending order.
    segments: list[Select[tuple[Trial]]] = []
    if column is Trial.id:
        query = select(Trial).where(*where)
        if after is not None:
            query = query.where(beyond(Trial.id, after[1]))
        segments.append(query.order_by(*ordered(Trial.id)))
    else:
        if after is None or after[0] is not None:
            query = select(Trial).where(*where, column.is_not(None))
            if after is not None:
                query = query.where(beyond(tuple_(column, Trial.id), tuple_(*after)))
            segments.append(query.order_by(*ordered(column, Trial.id)))
        query = select(Trial).where(*where, column.is_(None))
        if after is not None and after[0] is None:
            query = query.where(beyond(Trial.id, after[1]))
        segments.append(query.order_by(*ordered(Trial.id)))

    items: list[Trial] = []
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(Trial).where(*where)) or 0
        for query in segments:
            if len(items) > limit:
                break
            items.extend(session.scalars(query.limit(limit + 1 - len(items))))
    more = len(items) > limit
    items = items[:limit]
    last = items[-1] if more else None
    next_cursor = _encode_cursor(sort, getattr(last, column.key), last.id) if last is not None else None
    return TrialPage(items, total, next_cursor)


def _encode_cursor(sort: str, value: Any, trial_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([sort, value, trial_id]).encode()).decode()


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        cursor_sort, value, trial_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise ConfigError("invalid cursor: pass the next_cursor of the previous page unchanged") from None
    if cursor_sort != sort or not isinstance(trial_id, int):
        raise ConfigError(f"this cursor belongs to a listing sorted by {cursor_sort!r}, not {sort!r}")
    return value, trial_id
