"""tpe-asha: Optuna TPE proposes a family's hyperparameters, successive halving prunes, per fold.

As Ahmadianshalchi et al. (2026) tune BiGRU heads on frozen DistilHuBERT frames: a multivariate,
grouped TPE sampler (Bergstra et al., 2011; Falkner et al., 2018) with `n_startup_trials` random
trials first, and successive-halving pruning (ASHA: Li et al., 2020) from epoch `min_resource`,
keeping the best 1 / `reduction_factor` at each rung. Per fold, every trial trains on the fold's
training speakers minus a speaker-disjoint validation group and is judged on that group only; the
best configuration is then retrained by the shared protocol and tested once on the fold's
held-out speakers.

The study is a real Optuna storage (`optuna.db` in the search's folder, one study per fold), so
`optuna-dashboard sqlite:///<folder>/optuna.db` shows its trials, learning curves and pruning.
Trials keep a heartbeat there: a trial whose process died is failed by Optuna once its heartbeat
is stale and retried with the same parameters, so a resumed search loses and duplicates nothing.
When the search runs inside Ray (the service's workers), each trial is a Ray task of its own with
`gpus` GPUs and `options.trial_cpus` CPUs; `options.parallel_trials` of them run at once.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nas.data.folds import Fold
from nas.dataset import PreparedData
from nas.errors import SearchCancelled, SernasError
from nas.genome import Genome
from nas.reporting import Reporter, TrialStage, TrialState
from nas.spec import TpeAshaSearch
from nas.strategies.base import FoldResult, SearchContext, SearchResult, SearchStrategy
from nas.strategies.protocol import FoldPlan, plan_holdout_fold, retrain_and_test, run_folds
from search_spaces.distributions import suggest
from search_spaces.families import realise

STUDY_FILE = "optuna.db"
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 15  # a trial silent this long is stale: its process died
MAX_RETRIES = 2  # a trial whose process died is run again at most this often
_STATE = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAILED}


def study_url(workdir: Path) -> str:
    """The Optuna storage of a search's folder; optuna-dashboard opens it."""
    return f"sqlite:///{(workdir / STUDY_FILE).resolve()}"


class TpeAshaStrategy(SearchStrategy):
    name: ClassVar[str] = "tpe-asha"
    spec_type: ClassVar[type[TpeAshaSearch]] = TpeAshaSearch

    def preflight(self, spec: TpeAshaSearch, n_classes: int, device: str) -> None:
        """SSL frames need their frozen model: refuse, naming where to put it, before any audio is decoded."""
        if spec.features.ssl is not None:
            from nas.features.ssl import load_ssl_model

            load_ssl_model(spec.features.ssl, device)

    def run(self, ctx: SearchContext) -> SearchResult:
        ctx.reporter.log(f"optuna study: optuna-dashboard {study_url(ctx.workdir)}")
        return run_folds(ctx, lambda fold, fold_dir: _run_fold(ctx, fold, fold_dir))


@dataclass(frozen=True)
class TrialJob:
    """Everything one trial needs, in plain values: it pickles into a Ray task."""

    spec: TpeAshaSearch
    data: PreparedData
    plan: FoldPlan
    study_name: str
    storage_url: str
    device: str


def _run_fold(ctx: SearchContext, fold: Fold, fold_dir: Path) -> FoldResult:
    spec: TpeAshaSearch = ctx.spec
    plan = plan_holdout_fold(ctx, fold, spec.options.validation_fraction)
    job = TrialJob(spec, ctx.data, plan, f"fold-{fold.index}", study_url(ctx.workdir), ctx.device)
    study = _study(job)
    _search(ctx, job, study)
    best = _best_trial(study)
    ctx.reporter.log(f"fold {fold.index}: best trial {best.number} (val {spec.objective} {best.value:.3f})")
    return retrain_and_test(ctx, plan, _genome(spec, ctx.data, best.params), fold_dir)


def _study(job: TrialJob, seed: int | None = None) -> Any:
    import warnings

    import optuna

    # Heartbeats and grouped TPE are marked experimental; they are what the method needs.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our reporter logs each trial
    storage = optuna.storages.RDBStorage(
        job.storage_url,
        engine_kwargs={"connect_args": {"timeout": 60}},  # parallel trials write one SQLite file
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
    )
    options = job.spec.options
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=options.n_startup_trials,
        multivariate=options.multivariate,
        group=options.group,
        seed=job.spec.seed + job.plan.fold.index if seed is None else seed,
    )
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.SuccessiveHalvingPruner(
            min_resource=options.min_resource, reduction_factor=options.reduction_factor
        )
        if options.pruner == "successive-halving"
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        storage=storage,
        study_name=job.study_name,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )


def _search(ctx: SearchContext, job: TrialJob, study: Any) -> None:
    """Run trials until the budget is spent: counted in finished trials (complete or pruned), or time."""
    import optuna

    options = job.spec.options
    started = time.monotonic()
    recorded: set[int] = set()
    parallel = _RayTrials(job) if _in_ray() else None

    def finished() -> int:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(study.get_trials(deepcopy=False, states=states))

    def budget_left(in_flight: int = 0) -> bool:
        """Whether another trial may start while `in_flight` others still run (and may all finish)."""
        in_time = options.timeout_s is None or time.monotonic() - started < options.timeout_s
        return in_time and (options.n_trials is None or finished() + in_flight < options.n_trials)

    optuna.storages.fail_stale_trials(study)  # trials of a worker that died; their retries are queued
    _record(ctx.reporter, job, study, recorded)
    if parallel is not None:
        ctx.reporter.log(
            f"trials run as Ray tasks, {options.parallel_trials} at a time, "
            f"{options.trial_cpus:g} CPU and {job.spec.gpus:g} GPU each"
        )
        parallel.run(ctx, study, budget_left, lambda: _record(ctx.reporter, job, study, recorded))
        return
    while budget_left():
        if ctx.is_cancelled():
            raise SearchCancelled("search cancelled between trials; resume continues the same study")
        study.optimize(lambda trial: _objective(trial, job, ctx.reporter, ctx.is_cancelled), n_trials=1)
        _record(ctx.reporter, job, study, recorded)


def _objective(trial: Any, job: TrialJob, reporter: Reporter | None, is_cancelled: Any = None) -> float:
    """Train one configuration on the fold's training rows; report each epoch to Optuna, which may prune."""
    import optuna

    from nas.models import build
    from nas.train import TrainConfig, fit

    spec, plan, data = job.spec, job.plan, job.data
    params = suggest(trial, spec.space.distributions())
    genome = _genome(spec, data, params)
    model = build(genome)
    model.set_scaler(plan.mean, plan.std)
    key, fold = _key(job, trial.number), plan.fold.index
    trial_id = None if reporter is None else reporter.start_trial(key, params, fold=fold, stage=TrialStage.SEARCH)
    metric = f"val_{spec.objective}"

    def on_epoch(epoch: int, entry: dict[str, float]) -> None:
        trial.set_user_attr(f"epoch_{epoch}", entry)  # the learning curve, for our trials table
        if reporter is not None and trial_id is not None:
            reporter.report(trial_id, epoch, entry)
        trial.report(entry[metric], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {entry[metric]:.3f})")

    outcome = fit(
        model,
        data.training_rows(plan.train, genome.input.segments),
        data.rows(plan.validation),
        TrainConfig.of(genome.training, seed=spec.seed + fold * 1000 + trial.number),
        classes=data.classes,
        device=job.device,
        on_epoch=on_epoch,
        is_cancelled=is_cancelled,
    )
    best = outcome.history[outcome.best_epoch - 1]
    trial.set_user_attr("best_epoch", outcome.best_epoch)
    return float(best[metric])


def _record(reporter: Reporter, job: TrialJob, study: Any, recorded: set[int]) -> None:
    """Every finished Optuna trial not yet recorded becomes (or completes) a trial of ours, with its epochs."""
    for trial in study.get_trials(deepcopy=False):
        state = _STATE.get(trial.state.name)
        if state is None or trial.number in recorded:
            continue
        trial_id = reporter.start_trial(
            _key(job, trial.number), trial.params, fold=job.plan.fold.index, stage=TrialStage.SEARCH
        )
        epochs = sorted(
            (int(k.removeprefix("epoch_")), v) for k, v in trial.user_attrs.items() if k.startswith("epoch_")
        )
        for epoch, entry in epochs:
            reporter.report(trial_id, epoch, entry)
        metrics: dict[str, Any] = {"epochs": len(epochs), "optuna_trial": trial.number}
        if epochs:
            metrics |= {k: v for k, v in epochs[-1][1].items() if k.startswith("val_")}
        if trial.value is not None:
            metrics[f"val_{job.spec.objective}"] = trial.value
        reporter.finish_trial(trial_id, state, metrics)
        recorded.add(trial.number)
        score = "" if trial.value is None else f", val {job.spec.objective} {trial.value:.3f}"
        fold = job.plan.fold.index
        reporter.log(f"fold {fold}: trial {trial.number} {state.value} after {len(epochs)} epoch(s){score}")


def _best_trial(study: Any) -> Any:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise SernasError(
            f"study {study.study_name}: no trial completed (all pruned or failed); raise options.n_trials, "
            "options.min_resource or set options.pruner 'none'"
        )
    return study.best_trial


def _genome(spec: TpeAshaSearch, data: PreparedData, params: dict[str, Any]) -> Genome:
    architecture, recipe = realise(spec.space.family, {**spec.space.fixed, **params})
    if spec.options.max_epochs is not None:
        recipe = recipe.model_copy(update={"epochs": min(recipe.epochs, spec.options.max_epochs)})
    return Genome(input=spec.features, architecture=architecture, classes=data.classes, training=recipe)


def _key(job: TrialJob, number: int) -> str:
    return f"fold-{job.plan.fold.index}/trial-{number}"


# ---------------------------------------------------------------- trials as Ray tasks


def _in_ray() -> bool:
    import sys

    ray = sys.modules.get("ray")  # the search runs in a Ray worker only if Ray was imported to start it
    return ray is not None and ray.is_initialized()


class _RayTrials:
    """Keeps `parallel_trials` Ray tasks running, each one trial of the shared study."""

    def __init__(self, job: TrialJob) -> None:
        import ray

        self.job = job
        options = job.spec.options
        self.remote = ray.remote(max_retries=0)(_trial_task).options(
            num_cpus=options.trial_cpus, num_gpus=job.spec.gpus
        )
        self.data_ref = ray.put(job)

    def run(self, ctx: SearchContext, study: Any, budget_left: Any, record: Any) -> None:
        import ray

        running: list[Any] = []
        launched = len(study.trials)
        try:
            while True:
                while len(running) < self.job.spec.options.parallel_trials and budget_left(len(running)):
                    # One sampler seed per task: tasks that started from one seed would propose alike.
                    running.append(self.remote.remote(self.data_ref, self.job.spec.seed * 1000 + launched))
                    launched += 1
                if not running:
                    return
                done, running = ray.wait(running, num_returns=1, timeout=1.0)
                for ref in done:
                    ray.get(ref)  # a trial that raised fails the search with its error
                record()
                if ctx.is_cancelled():
                    raise SearchCancelled("search cancelled; running trials stopped, resume continues the study")
        finally:
            for ref in running:
                ray.cancel(ref, force=True)


def _trial_task(job: TrialJob, seed: int) -> None:
    """One trial in a Ray worker: the GPU Ray assigned (CUDA_VISIBLE_DEVICES) or the CPUs it reserved."""
    import torch

    torch.set_num_threads(max(1, int(job.spec.options.trial_cpus)))
    device = "cuda" if job.spec.gpus > 0 and torch.cuda.is_available() else "cpu"
    local = dataclasses.replace(job, device=device)
    _study(local, seed).optimize(lambda trial: _objective(trial, local, None), n_trials=1)
