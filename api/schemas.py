"""Request and response models of the REST API, named by purpose (XCreate in, XPublic out)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.reporting import TrialStage, TrialState
from nas.spec import CorpusSpec, FoldSpec, SearchSpec
from nas.store.models import Artifact, Event, EventKind, Search, SearchStatus, Trial, TrialStep
from nas.store.progress import Progress, RunningTrial

# ---------------------------------------------------------------- errors


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='where, e.g. ["body", "corpus", "root"]')
    msg: str = Field(description="what is wrong with it")


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. validation_error, unknown_name, not_found")
    message: str = Field(description="what went wrong and what to fix")
    fields: list[FieldError] = Field(default_factory=list, description="the offending request fields")
    valid: list[str] | None = Field(None, description="the accepted names, when a name was unknown")


class ErrorBody(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------- searches

# PostgreSQL text columns cannot hold NUL; refuse it up front (422) rather than fail in the INSERT.
NO_NUL = r"^[^\x00]*$"

SPEC_FIELDS = ("preset", "strategy", "corpus", "overrides", "folds", "seed", "device", "threads", "gpus")

# `SearchCreate._one_way` in JSON Schema, so that the document says which bodies are valid: a corpus (and
# no spec), or a spec and none of the fields it already holds. A null counts as absent, as in the validator.
ONE_WAY_SCHEMA = [
    {
        "required": ["corpus"],
        "properties": {"corpus": {"not": {"type": "null"}}, "spec": {"type": "null"}},
    },
    {
        "required": ["spec"],
        "properties": {"spec": {"not": {"type": "null"}}},
        "not": {"anyOf": [{"required": [field]} for field in SPEC_FIELDS]},
    },
]


class SearchCreate(BaseModel):
    """A search to queue: a preset (plus dotted-key overrides) on a corpus, or a complete `spec`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": ONE_WAY_SCHEMA,
            "examples": [
                {
                    "name": "demo on RAVDESS",
                    "preset": "emodarts-demo",
                    "corpus": {"name": "ravdess", "root": "ravdess", "classes": ["neutral", "happy", "sad"]},
                    "overrides": {"options.search_epochs": 4, "space.nodes": 2},
                    "folds": {"n_folds": 6, "only": [0]},
                    "idempotency_key": "demo-1",
                }
            ],
        },
    )

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL, description="a label for people")
    preset: str | None = Field(
        None,
        max_length=100,
        pattern=NO_NUL,
        description="search-space preset, see GET /search-spaces (default: the strategy's first preset)",
    )
    strategy: str | None = Field(
        None,
        max_length=100,
        pattern=NO_NUL,
        description="darts (default), tpe-asha or hyperband; the preset must be for this strategy",
    )
    corpus: CorpusSpec | None = Field(
        None, description="the corpus; a relative `root` is looked up under the server's data roots"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='dotted keys over the preset, e.g. {"space.nodes": 2, "options.search_epochs": 5}',
    )
    folds: FoldSpec | None = None
    seed: int = Field(0, ge=0, lt=2**32)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(
        None, ge=1, le=1024, description="torch threads of the search (results are reproducible for one count)"
    )
    gpus: float = Field(
        0, ge=0, le=1024, description="GPUs reserved for the search (tpe-asha, hyperband: for each trial)"
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="a retry with the same key returns the first search (also: the Idempotency-Key header)",
    )
    spec: SearchSpec | None = Field(
        None, description="a complete SearchSpec instead of preset/corpus/overrides/folds/seed/device/threads/gpus"
    )

    @model_validator(mode="after")
    def _one_way(self) -> SearchCreate:
        if self.spec is None and self.corpus is None:
            raise ValueError("give `corpus` (with `preset` and optional `overrides`), or a complete `spec`")
        if self.spec is not None:
            both = [f for f in SPEC_FIELDS if f in self.model_fields_set]
            if both:
                raise ValueError(f"a complete `spec` already holds {', '.join(both)}: leave them out")
        return self


def search_links(search_id: str, status: SearchStatus) -> dict[str, str]:
    base = f"/searches/{search_id}"
    links = {"self": base, "trials": f"{base}/trials", "best": f"{base}/best", "events": f"{base}/events"}
    # Only the actions that do something in this status: no link leads to a 409 or a no-op.
    if status in (SearchStatus.QUEUED, SearchStatus.WAITING, SearchStatus.RUNNING):
        links["cancel"] = f"{base}/cancel"
    if status in (SearchStatus.FAILED, SearchStatus.CANCELLED):
        links["resume"] = f"{base}/resume"
    if status == SearchStatus.COMPLETED:
        links["export"] = f"{base}/export"
    return links


class RunningTrialPublic(BaseModel):
    id: int
    key: str
    fold: int | None
    stage: str | None
    epoch: int | None = Field(description="its latest epoch (step); null before the first")
    epoch_at: datetime | None = Field(description="when that epoch was computed")

    @classmethod
    def of(cls, trial: RunningTrial) -> RunningTrialPublic:
        return cls(
            id=trial.id, key=trial.key, fold=trial.fold, stage=trial.stage, epoch=trial.epoch, epoch_at=trial.epoch_at
        )


class EstimatePublic(BaseModel):
    seconds: float = Field(description="the time left, in seconds")
    finish_at: datetime = Field(description="when the search would then finish")
    basis: str = Field(description="what it was computed from")


class ProgressPublic(BaseModel):
    """How far a search has got, from its trials."""

    trials: dict[TrialState, int] = Field(description="how many trials are in each state")
    folds_total: int | None = Field(
        description="the folds the search runs; null for session folds (counted when the corpus is read)"
    )
    folds_done: int = Field(description="folds whose model is complete")
    running: list[RunningTrialPublic] = Field(
        description="the trials running now, with their fold, stage and latest epoch (empty unless running)"
    )
    elapsed_seconds: float | None = Field(
        description="time since the current attempt started (until it finished); null while queued"
    )
    estimate: EstimatePublic | None = Field(
        description="the time left, only while running and only when measured: the mean time of the folds done "
        "in this attempt times the folds left, less what the fold under way has spent, plus the final model's "
        "training at the mean of a fold's retrain; null until a fold has finished in this attempt, or when the "
        "number of folds is not known yet"
    )

    @classmethod
    def of(cls, progress: Progress) -> ProgressPublic:
        estimate = progress.estimate
        return cls(
            trials=progress.trials,
            folds_total=progress.folds_total,
            folds_done=progress.folds_done,
            running=[RunningTrialPublic.of(t) for t in progress.running],
            elapsed_seconds=progress.elapsed_seconds,
            estimate=None
            if estimate is None
            else EstimatePublic(seconds=estimate.seconds, finish_at=estimate.at, basis=estimate.basis),
        )


class SearchPublic(BaseModel):
    id: str
    name: str
    status: SearchStatus
    strategy: str
    preset: str | None = Field(description="the preset the spec was built from, if any")
    spec: dict[str, Any] = Field(description="the SearchSpec JSON as stored (corpus root resolved)")
    cancel_requested: bool
    attempts: int = Field(description="how many times a worker has claimed it")
    error: str | None
    summary: dict[str, Any] | None = Field(description="mean and std over folds once completed")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    progress: ProgressPublic | None = Field(
        None,
        description="how far it has got (GET /searches and /searches/{id}; null in the answers of submit, "
        "cancel and resume)",
    )
    links: dict[str, str]

    @classmethod
    def of(cls, search: Search, progress: Progress | None = None) -> SearchPublic:
        return cls(
            id=search.id,
            name=search.name,
            status=search.status,
            strategy=search.strategy,
            preset=search.spec.get("preset"),
            spec=search.spec,
            cancel_requested=search.cancel_requested,
            attempts=search.attempts,
            error=search.error,
            summary=search.summary,
            created_at=search.created_at,
            updated_at=search.updated_at,
            started_at=search.started_at,
            finished_at=search.finished_at,
            heartbeat_at=search.heartbeat_at,
            progress=None if progress is None else ProgressPublic.of(progress),
            links=search_links(search.id, search.status),
        )


class SearchPage(BaseModel):
    items: list[SearchPublic]
    total: int = Field(description="searches matching the filter, not just this page")
    limit: int
    offset: int


# ---------------------------------------------------------------- trials


class StepPublic(BaseModel):
    step: int
    metrics: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, step: TrialStep) -> StepPublic:
        return cls(step=step.step, metrics=step.metrics, created_at=step.created_at)


class ArtifactPublic(BaseModel):
    name: str
    sha256: str | None = Field(description="None: the file was missing when recorded")
    size_bytes: int | None
    created_at: datetime

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactPublic:
        return cls(
            name=artifact.name,
            sha256=artifact.sha256,
            size_bytes=artifact.size_bytes,
            created_at=artifact.created_at,
        )


class TrialPublic(BaseModel):
    id: int
    search_id: str
    key: str = Field(description="the strategy's stable name for the trial, e.g. fold-0/retrain/emodarts")
    state: TrialState
    stage: str | None
    fold: int | None
    params: dict[str, Any]
    metrics: dict[str, Any] | None
    ua: float | None
    wa: float | None
    n_params: int | None = Field(description="the model's parameter count")
    macro_f1: float | None
    latency_ms: float | None = Field(description="the median latency of one example (metric latency_ms_p50)")
    has_genome: bool
    started_at: datetime
    finished_at: datetime | None
    links: dict[str, str]

    @classmethod
    def fields_of(cls, trial: Trial) -> dict[str, Any]:
        links = {"self": f"/trials/{trial.id}", "search": f"/searches/{trial.search_id}"}
        # Search-stage trials (a supernet's epochs, a sampled configuration, a GA restart) keep no weights.
        if trial.state == TrialState.COMPLETE and trial.stage != TrialStage.SEARCH:
            links["export"] = f"/trials/{trial.id}/export"
        return {
            "id": trial.id,
            "search_id": trial.search_id,
            "key": trial.key,
            "state": trial.state,
            "stage": trial.stage,
            "fold": trial.fold,
            "params": trial.params,
            "metrics": trial.metrics,
            "ua": trial.ua,
            "wa": trial.wa,
            "n_params": trial.n_params,
            "macro_f1": trial.macro_f1,
            "latency_ms": trial.latency_ms,
            "has_genome": trial.genome is not None,
            "started_at": trial.started_at,
            "finished_at": trial.finished_at,
            "links": links,
        }

    @classmethod
    def of(cls, trial: Trial) -> TrialPublic:
        return cls(**cls.fields_of(trial))


class TrialDetail(TrialPublic):
    genome: dict[str, Any] | None = Field(description="the genome JSON (rebuild it with nas.genome)")
    steps: list[StepPublic] = Field(description="intermediate values per step (epoch), in order")
    artifacts: list[ArtifactPublic]

    @classmethod
    def of(cls, trial: Trial) -> TrialDetail:
        """`trial` must come with its steps and artifacts loaded (repository.get_trial)."""
        return cls(
            **cls.fields_of(trial),
            genome=trial.genome,
            steps=[StepPublic.of(s) for s in trial.steps],
            artifacts=[ArtifactPublic.of(a) for a in trial.artifacts],
        )


class TrialPage(BaseModel):
    items: list[TrialPublic]
    total: int = Field(description="trials matching the filters, not just this page")
    sort: str
    limit: int
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; None on the last")
    links: dict[str, str]


# ---------------------------------------------------------------- events


class EventPublic(BaseModel):
    """One event of a search. `kind` is also its SSE event type; trial and epoch events fill in the trial's
    fields (null elsewhere)."""

    id: int
    search_id: str
    trial_id: int | None
    kind: EventKind = Field(
        description="log: a log line; trial: a trial started, was resumed or finished; epoch: a trial's epoch "
        "(step) was computed (a resume replaying a restored epoch sends none)"
    )
    level: int = Field(description="a Python logging level: 20 info, 30 warning, 40 error")
    level_name: str
    message: str
    created_at: datetime = Field(description="when it happened (an epoch: when it was computed)")
    key: str | None = Field(None, description="trial and epoch events: the trial's key, e.g. fold-0/search")
    fold: int | None = Field(None, description="trial and epoch events: the trial's fold (null: not a fold's)")
    stage: str | None = Field(None, description="trial and epoch events: the trial's stage (search, retrain, final...)")
    state: TrialState | None = Field(None, description="trial events: the trial's state as of this event")
    epoch: int | None = Field(None, description="epoch events: the step (epoch) number")
    metrics: dict[str, Any] | None = Field(
        None,
        description="epoch events: the epoch's values (losses, validation scores); trial events that "
        "finish a trial: its final numeric metrics",
    )

    @classmethod
    def of(cls, event: Event) -> EventPublic:
        data = event.data or {}
        return cls(
            id=event.id,
            search_id=event.search_id,
            trial_id=event.trial_id,
            kind=event.kind,
            level=event.level,
            level_name=logging.getLevelName(event.level),
            message=event.message,
            created_at=event.created_at,
            key=data.get("key"),
            fold=data.get("fold"),
            stage=data.get("stage"),
            state=data.get("state"),
            epoch=data.get("epoch"),
            metrics=data.get("metrics"),
        )


class StatusPublic(BaseModel):
    """The `status` event of the live feed: sent first, then whenever the search's state changes."""

    search_id: str
    status: SearchStatus
    cancel_requested: bool
    attempts: int
    error: str | None
    summary: dict[str, Any] | None


# ---------------------------------------------------------------- catalog


class SectionSchemas(BaseModel):
    space: dict[str, Any]
    features: dict[str, Any] | None = Field(None, description="absent for genetic-ensemble: members read their own")
    options: dict[str, Any]


class SearchSpacePublic(BaseModel):
    name: str
    strategy: str
    description: str
    defaults: SectionSchemas = Field(description="the preset's values of each section")
    json_schema: SectionSchemas = Field(description="JSON Schema of each section (what overrides may set)")


class StrategyPublic(BaseModel):
    name: str
    description: str
    json_schema: dict[str, Any] = Field(description="JSON Schema of a complete spec of this strategy")
    presets: list[SearchSpacePublic]


class SearchSpaceCatalog(BaseModel):
    strategies: list[StrategyPublic]


class DatasetPublic(BaseModel):
    """A corpus reader: the `corpus.name` to submit and the folder layout it expects."""

    name: str
    layout: str
    root_is_file: bool = Field(description="true: `corpus.root` is a manifest file, not a folder")
    description: str


class DataRootPublic(BaseModel):
    path: str
    exists: bool
    folders: list[str] = Field(
        description="sub-folders (candidate corpus roots); symlinks that lead outside the data roots are left out"
    )
    manifests: list[str] = Field(
        description=".csv files (candidate manifests for the csv reader); symlinks outside the data roots are left out"
    )
    truncated: bool = Field(description="true when there were more entries than listed")


class DatasetCatalog(BaseModel):
    corpora: list[DatasetPublic]
    data_roots: list[DataRootPublic] = Field(description="corpus roots must lie inside one of these")


class ComponentHealth(BaseModel):
    status: Literal["ok", "starting", "disabled", "error"] = Field(
        description="disabled: this process does not run it (another one may); starting: not ready yet"
    )
    detail: str | None = Field(None, description="what is wrong, or what it is connected to")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok when the database answers and the dispatcher and Ray are ok or disabled"
    )
    database: bool = Field(description="the study database answered")
    dispatcher: ComponentHealth = Field(description="the dispatcher that runs queued searches on Ray")
    ray: ComponentHealth = Field(description="the Ray cluster the dispatcher submits to")
    version: str
