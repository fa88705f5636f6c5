"""Aggregates of a search's trials, computed on the server so that a page never fetches 100k rows to draw them.

- `GET /searches/{id}/pareto`: the trials no other trial beats on both a score and a cost (UA against
  parameters or latency), and a bounded sample of the rest for context;
- `GET /searches/{id}/history`: the best score so far against the trial number, and a bounded sample of scores;
- `GET /searches/{id}/curves`: per-epoch values (learning curves) of a bounded set of trials;
- `GET /searches/{id}/overview`: the folds table (each fold's model: test and validation scores, size, speed,
  test speakers) and, when the search keeps one, the Optuna storage that optuna-dashboard opens;
- `GET /searches/{id}/genomes`: the genomes stored on the search's trials, and those their steps derived (a DARTS
  supernet's cells at each search epoch), in the order they were made;
- `GET /best-scores`: the best validation score of each of a page of searches.

Scores and costs are read from each trial's metrics in SQL (JSON extraction works on SQLite and PostgreSQL),
one scalar per trial; the front and the running best are computed here in O(n log n) and O(n). Nothing here
names a strategy: the keys are those every strategy's trials report (`val_ua`, `params`, `latency_ms_p50`...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Protocol, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from api.deps import VALIDATION, SearchId, SessionsDep, SettingsDep, errors, get_or_404
from api.schemas import NO_NUL
from nas.reporting import STEP_GENOME, TrialStage, TrialState
from nas.store.models import Trial, TrialStep
from nas.store.progress import FOLD_MODEL_STAGES

router = APIRouter(tags=["insights"], responses=VALIDATION)

Score = Literal["val_ua", "val_wa", "val_macro_f1", "ua", "wa", "macro_f1"]
Cost = Literal["params", "latency_ms_p50"]
# Validation scores choose models; the plain ones are a fold model's test scores (`ua` is test UA there).
SCORE_HELP = "a metric to maximise: val_ua, val_wa, val_macro_f1 (validation) or ua, wa, macro_f1 (test)"
LABELS_BATCH = 1000  # trial ids per IN (...) query
OPTUNA_STORAGE = "optuna.db"  # the file name under a search's folder of a strategy that keeps an Optuna study

StageFilter = Annotated[str | None, Query(max_length=64, pattern=NO_NUL, description="only this stage, e.g. search")]
FoldFilter = Annotated[int | None, Query(ge=0, le=10_000, description="only this fold")]


def _metric(name: str) -> ColumnElement[float]:
    """A trial's numeric metric `name` as a float column (NULL where absent)."""
    return Trial.metrics[name].as_float()


def _filters(search_id: str, stage: str | None, fold: int | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Trial.search_id == search_id]
    if stage is not None:
        where.append(Trial.stage == stage)
    if fold is not None:
        where.append(Trial.fold == fold)
    return where


def _spread(items: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` of `items`, evenly spaced, in order; the first and (from two on) the last kept."""
    if len(items) <= limit:
        return list(items)
    if limit < 2:
        return list(items[:limit])
    stride = (len(items) - 1) / (limit - 1)  # > 1, so no item is taken twice
    return [items[round(i * stride)] for i in range(limit)]


# ---------------------------------------------------------------- Pareto front


class ScoredTrial(BaseModel):
    trial_id: int
    key: str
    fold: int | None
    stage: str | None
    score: float
    cost: float


class ParetoFront(BaseModel):
    score: str
    cost: str
    considered: int = Field(description="completed trials that report both the score and the cost")
    front: list[ScoredTrial] = Field(
        description="the non-dominated trials (no other has a cost as low and a score as high, one of them "
        "strictly), by cost ascending: each costs more and scores more than the one before"
    )
    others: list[ScoredTrial] = Field(description="dominated trials, at most `limit`, evenly spread by cost")
    others_total: int = Field(description="how many trials are dominated")


class Point(NamedTuple):
    trial_id: int
    score: float
    cost: float


class Scored(Protocol):
    """A trial with a score and a cost (a Point, a ScoredTrial)."""

    @property
    def trial_id(self) -> int: ...
    @property
    def score(self) -> float: ...
    @property
    def cost(self) -> float: ...


P = TypeVar("P", bound=Scored)


def pareto_front(points: Sequence[P]) -> tuple[list[P], list[P]]:
    """(non-dominated, dominated) points for a score to maximise and a cost to minimise, in O(n log n).

    Sorted by cost, then score descending, a point is dominated exactly when an earlier one scores at least
    as much, unless it equals the best point so far in both (equal points do not dominate each other).
    """
    ordered = sorted(points, key=lambda p: (p.cost, -p.score, p.trial_id))
    front: list[P] = []
    dominated: list[P] = []
    for point in ordered:
        best = front[-1] if front else None
        if best is None or point.score > best.score or (point.score, point.cost) == (best.score, best.cost):
            front.append(point)
        else:
            dominated.append(point)
    return front, dominated


@router.get("/searches/{search_id}/pareto", response_model=ParetoFront, responses=errors(404))
def search_pareto(
    search_id: SearchId,
    sessions: SessionsDep,
    score: Annotated[Score, Query(description=SCORE_HELP)] = "val_ua",
    cost: Annotated[Cost, Query(description="a cost to minimise: params (count) or latency_ms_p50")] = "params",
    stage: StageFilter = None,
    fold: FoldFilter = None,
    limit: Annotated[int, Query(ge=0, le=20_000, description="at most this many dominated trials")] = 2000,
) -> ParetoFront:
    """The Pareto front of the search's completed trials: `score` up, `cost` down."""
    get_or_404(sessions, search_id)
    query = select(Trial.id, _metric(score), _metric(cost)).where(
        *_filters(search_id, stage, fold), Trial.state == TrialState.COMPLETE
    )
    with sessions() as session:
        # Three numbers a trial, filtered and sorted here: what is shown is labelled by a second, small query.
        points = [Point(*row) for row in session.execute(query) if row[1] is not None and row[2] is not None]
        front, dominated = pareto_front(points)
        others = _spread(dominated, limit)
        labels = _labels(session, [p.trial_id for p in front + others])

    def scored(point: Point) -> ScoredTrial:
        key, fold, stage = labels[point.trial_id]
        return ScoredTrial(key=key, fold=fold, stage=stage, **point._asdict())

    return ParetoFront(
        score=score,
        cost=cost,
        considered=len(points),
        front=[scored(p) for p in front],
        others=[scored(p) for p in others],
        others_total=len(dominated),
    )


def _labels(session: Session, trial_ids: list[int]) -> dict[int, tuple[str, int | None, str | None]]:
    """The key, fold and stage of each trial."""
    labels: dict[int, tuple[str, int | None, str | None]] = {}
    for start in range(0, len(trial_ids), LABELS_BATCH):
        batch = trial_ids[start : start + LABELS_BATCH]
        query = select(Trial.id, Trial.key, Trial.fold, Trial.stage).where(Trial.id.in_(batch))
        labels |= {trial_id: (key, fold, stage) for trial_id, key, fold, stage in session.execute(query)}
    return labels


# ---------------------------------------------------------------- optimisation history


class HistoryPoint(BaseModel):
    number: int = Field(description="the trial's place among the scored trials, from 1, in the order they started")
    trial_id: int
    key: str
    score: float


class History(BaseModel):
    score: str
    total: int = Field(description="completed trials with the score")
    best: list[HistoryPoint] = Field(
        description="each trial that beat every earlier one: the best-so-far line steps up at these"
    )
    points: list[HistoryPoint] = Field(description="every trial's score, at most `limit`, evenly spread")


@router.get("/searches/{search_id}/history", response_model=History, responses=errors(404))
def search_history(
    search_id: SearchId,
    sessions: SessionsDep,
    score: Annotated[Score, Query(description=SCORE_HELP)] = "val_ua",
    stage: StageFilter = None,
    fold: FoldFilter = None,
    limit: Annotated[int, Query(ge=1, le=20_000, description="at most this many points")] = 5000,
) -> History:
    """The optimisation history: each completed trial's score and the best score so far, by trial number."""
    get_or_404(sessions, search_id)
    query = (
        select(Trial.id, _metric(score))
        .where(*_filters(search_id, stage, fold), Trial.state == TrialState.COMPLETE)
        .order_by(Trial.id)
    )
    with sessions() as session:
        rows = [(trial_id, value) for trial_id, value in session.execute(query) if value is not None]
        best: list[int] = []  # the places of the trials that beat every earlier one
        for place, (_, value) in enumerate(rows):
            if not best or value > rows[best[-1]][1]:
                best.append(place)
        shown = _spread(range(len(rows)), limit)
        labels = _labels(session, [rows[i][0] for i in sorted({*best, *shown})])

    def point(place: int) -> HistoryPoint:
        trial_id, value = rows[place]
        return HistoryPoint(number=place + 1, trial_id=trial_id, key=labels[trial_id][0], score=value)

    return History(score=score, total=len(rows), best=[point(i) for i in best], points=[point(i) for i in shown])


# ---------------------------------------------------------------- learning curves


class Curve(BaseModel):
    trial_id: int
    key: str
    fold: int | None
    stage: str | None
    state: TrialState = Field(description="pruned and failed curves stop early; running ones are still growing")
    steps: list[int]
    values: dict[str, list[float | None]] = Field(description="per metric, one value per step (null: not reported)")


class Curves(BaseModel):
    metrics: list[str]
    total: int = Field(description="trials matching the filters; `trials` holds at most `limit` of them")
    trials: list[Curve]


MetricName = Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


@router.get("/searches/{search_id}/curves", response_model=Curves, responses=errors(404))
def search_curves(
    search_id: SearchId,
    sessions: SessionsDep,
    metric: Annotated[
        list[MetricName], Query(max_length=8, description="step values to return, e.g. val_ua and val_loss")
    ] = ["val_ua", "val_loss"],  # noqa: B006 - FastAPI copies a Query default; it is never mutated
    order: Annotated[
        Literal["newest", "best"], Query(description="which trials when there are more than `limit`")
    ] = "newest",
    score: Annotated[Score, Query(description=f"with order=best: {SCORE_HELP}")] = "val_ua",
    state: TrialState | None = None,
    stage: StageFilter = None,
    fold: FoldFilter = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Curves:
    """Learning curves: the per-epoch values of the newest (or best scoring) `limit` trials, in trial order."""
    get_or_404(sessions, search_id)
    where = _filters(search_id, stage, fold)
    if state is not None:
        where.append(Trial.state == state)
    chosen = select(Trial.id, Trial.key, Trial.fold, Trial.stage, Trial.state).where(*where)
    if order == "best":
        score_of = _metric(score)
        # Trials without the score (running, failed) come after every scored one.
        chosen = chosen.order_by(score_of.is_(None), score_of.desc(), Trial.id.desc())
    else:
        chosen = chosen.order_by(Trial.id.desc())
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(Trial).where(*where)) or 0
        trials = sorted(session.execute(chosen.limit(limit)).all())
        steps = session.execute(
            select(TrialStep.trial_id, TrialStep.step, TrialStep.metrics)
            .where(TrialStep.trial_id.in_([t.id for t in trials]))
            .order_by(TrialStep.trial_id, TrialStep.step)
        ).all()
    curves = {
        t.id: Curve(
            trial_id=t.id,
            key=t.key,
            fold=t.fold,
            stage=t.stage,
            state=t.state,
            steps=[],
            values={m: [] for m in metric},
        )
        for t in trials
    }
    for trial_id, step, values in steps:
        curve = curves[trial_id]
        curve.steps.append(step)
        for name in metric:
            curve.values[name].append(_number(values.get(name)))
    return Curves(metrics=metric, total=total, trials=list(curves.values()))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------- folds and storage


class FoldModel(BaseModel):
    """A fold's model (or the final one, trained on every speaker: `fold` null)."""

    trial_id: int
    key: str
    fold: int | None
    stage: str | None
    state: TrialState
    test: dict[str, float] = Field(description="ua, wa, macro_f1 on the fold's test speakers (none for the final)")
    validation: dict[str, float] = Field(description="val_ua, val_wa, val_macro_f1 at the chosen epoch")
    params: int | None
    latency_ms: float | None = Field(description="median latency of one example on the CPU")
    test_speakers: list[str]


class Overview(BaseModel):
    folds: list[FoldModel] = Field(description="each fold's model by fold, then the final model")
    optuna_storage: str | None = Field(
        description="the storage URL to open with optuna-dashboard, when the search keeps an Optuna study"
    )


TEST_KEYS = ("ua", "wa", "macro_f1")


@router.get("/searches/{search_id}/overview", response_model=Overview, responses=errors(404))
def search_overview(search_id: SearchId, sessions: SessionsDep, settings: SettingsDep) -> Overview:
    """The folds table of a search, and where its Optuna study lives (if it keeps one)."""
    search = get_or_404(sessions, search_id)
    stages = (*FOLD_MODEL_STAGES, TrialStage.FINAL)
    with sessions() as session:
        rows = session.scalars(
            select(Trial).where(Trial.search_id == search_id, Trial.stage.in_(stages)).order_by(Trial.id)
        ).all()
    folds = [_fold_model(t) for t in rows]
    folds.sort(key=lambda f: (f.fold is None, f.fold or 0, f.trial_id))
    folder = Path(search.result_dir) if search.result_dir else settings.results_dir / search.id
    storage = folder / OPTUNA_STORAGE
    return Overview(folds=folds, optuna_storage=f"sqlite:///{storage.resolve()}" if storage.is_file() else None)


def _fold_model(trial: Trial) -> FoldModel:
    metrics = trial.metrics or {}

    def numbers(keys: tuple[str, ...]) -> dict[str, float]:
        return {k: v for k in keys if (v := _number(metrics.get(k))) is not None}

    speakers = metrics.get("test_speakers")
    latency = _number(metrics.get("latency_ms_p50"))
    return FoldModel(
        trial_id=trial.id,
        key=trial.key,
        fold=trial.fold,
        stage=trial.stage,
        state=trial.state,
        test=numbers(TEST_KEYS),
        validation=numbers(tuple(f"val_{k}" for k in TEST_KEYS)),
        params=trial.n_params,
        latency_ms=latency,
        test_speakers=[str(s) for s in speakers] if isinstance(speakers, list) else [],
    )


# ---------------------------------------------------------------- genomes


class StoredGenome(BaseModel):
    trial_id: int
    key: str
    fold: int | None
    stage: str | None
    epoch: int | None = Field(
        description="the step (search epoch) whose derived architecture this is; null: the genome the trial stored"
    )
    family: str | None = Field(description="the architecture's family, e.g. emodarts")
    flags: list[str] = Field(description="what the derivation flagged, e.g. a SeqNN collapsed to skip connections")
    genome: dict[str, Any] = Field(description="a stored genome; of an epoch, its architecture and flags only")


class Genomes(BaseModel):
    genomes: list[StoredGenome] = Field(
        description="by trial, oldest first: the genomes each trial's epochs derived, then the one it stored"
    )


@router.get("/searches/{search_id}/genomes", response_model=Genomes, responses=errors(404))
def search_genomes(
    search_id: SearchId,
    sessions: SessionsDep,
    stage: StageFilter = None,
    fold: FoldFilter = None,
    limit: Annotated[int, Query(ge=1, le=500, description="the newest this many trials with genomes")] = 100,
    epochs: Annotated[
        int, Query(ge=0, le=1000, description="at most this many epoch genomes a trial, evenly spread")
    ] = 200,
) -> Genomes:
    """The genomes of the search's trials (derived cells, retrained and final models) and of their epochs (the cells
    a DARTS search derived at each epoch, while it runs too), in trial order."""
    get_or_404(sessions, search_id)
    # A running trial has stored no genome yet, but its epochs may have derived some (a supernet being searched).
    with_genomes = [*_filters(search_id, stage, fold), Trial.genome.is_not(None) | (Trial.state == TrialState.RUNNING)]
    with sessions() as session:
        trials = session.execute(
            select(Trial.id, Trial.key, Trial.fold, Trial.stage, Trial.genome)
            .where(*with_genomes)
            .order_by(Trial.id.desc())
            .limit(limit)
        ).all()
        steps = session.execute(
            select(TrialStep.trial_id, TrialStep.step, TrialStep.metrics[STEP_GENOME])
            .where(TrialStep.trial_id.in_([t.id for t in trials]))
            .order_by(TrialStep.trial_id, TrialStep.step)
        ).all()
    derived: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for trial_id, step, genome in steps:
        if isinstance(genome, dict):
            derived.setdefault(trial_id, []).append((step, genome))
    genomes = []
    for trial_id, key, trial_fold, trial_stage, genome in reversed(trials):
        labels = {"trial_id": trial_id, "key": key, "fold": trial_fold, "stage": trial_stage}
        genomes += [_stored(labels, step, g) for step, g in _spread(derived.get(trial_id, []), epochs)]
        if genome is not None:
            genomes.append(_stored(labels, None, genome))
    return Genomes(genomes=genomes)


def _stored(labels: dict[str, Any], epoch: int | None, genome: dict[str, Any]) -> StoredGenome:
    return StoredGenome(
        **labels,
        epoch=epoch,
        family=(genome.get("architecture") or {}).get("family"),
        flags=[str(flag) for flag in genome.get("flags") or []],
        genome=genome,
    )


# ---------------------------------------------------------------- best score of many searches


class BestScores(BaseModel):
    score: str
    best: dict[str, float | None] = Field(description="by search id: its completed trials' highest score, or null")


@router.get("/best-scores", response_model=BestScores)
def best_scores(
    sessions: SessionsDep,
    search_id: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]],
        Query(min_length=1, max_length=200, description="the searches (a page of GET /searches)"),
    ],
    score: Annotated[Score, Query(description=SCORE_HELP)] = "val_ua",
) -> BestScores:
    """The best `score` of each search's completed trials, in one query (the searches list shows it)."""
    score_of = _metric(score)
    query = (
        select(Trial.search_id, func.max(score_of))
        .where(Trial.search_id.in_(search_id), Trial.state == TrialState.COMPLETE)
        .group_by(Trial.search_id)
    )
    with sessions() as session:
        found: dict[str, float | None] = {s: v for s, v in session.execute(query)}
    return BestScores(score=score, best={s: found.get(s) for s in search_id})
