"""hyperband: Ray Tune's Hyperband over the CNN-LSTM, LSTM-CNN and CNN-Transformer families, per fold.

As Serra (LoopQPrize 2022) searches CNN-LSTM models: Hyperband (Li et al., 2018) runs successive-halving
brackets with reduction factor eta over configurations drawn from the families' spaces, at random (or by
Optuna's TPE), each trial trained one epoch per Tune iteration. The synchronous scheduler pauses a trial
at each rung until its bracket has caught up; a paused trial leaves a checkpoint (the training loop's
own, which resumes bit for bit) and is restored from it when it goes on. Per fold, every trial trains
on the fold's training speakers minus a speaker-disjoint validation group and is judged on that group
only; the best configuration (best validation objective seen at any epoch, as Hyperband defines it)
is then retrained by the shared protocol and tested once on the fold's held-out speakers.

The Tune experiment lives in the search's folder (`tune/fold-<k>`), so a search whose process died is
resumed by `Tuner.restore`: finished trials stay finished, interrupted ones go on from their last
epoch's checkpoint. Every Tune trial is a trial of ours: a Tune callback in this process forwards its
start, epochs and end (complete, stopped early by the scheduler, failed) to the search's Reporter.
Each trial is a Ray actor with `options.trial_cpus` CPUs and `gpus` GPUs (Ray sets
CUDA_VISIBLE_DEVICES); the search itself holds none, so its trials never wait on their own driver.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler

from nas.data.folds import Fold
from nas.dataset import PreparedData
from nas.errors import ResourceError, SearchCancelled, SernasError
from nas.genome import Genome
from nas.reporting import TrialStage, TrialState
from nas.spec import HyperbandSearch
from nas.strategies.base import FoldResult, SearchContext, SearchResult, SearchStrategy
from nas.strategies.protocol import FoldPlan, plan_holdout_fold, retrain_and_test, run_folds
from search_spaces.distributions import suggest, to_tune
from search_spaces.families import realise

TUNE_DIR = "tune"
FAMILY = "family"  # the configuration entry naming the family when a space has several
_CHECKPOINT = "trial.ckpt"  # the training loop's checkpoint inside a Tune checkpoint
_EPOCHS = "epochs.json"  # how many epochs that checkpoint holds
CANCEL_POLL_SECONDS = 1.0


def experiment_dir(workdir: Path, fold: int) -> Path:
    """Where the Tune experiment of a fold lives (Ray's own files: `tuner.pkl`, trial folders, results)."""
    return workdir / TUNE_DIR / f"fold-{fold}"


class HyperbandStrategy(SearchStrategy):
    name: ClassVar[str] = "hyperband"
    spec_type: ClassVar[type[HyperbandSearch]] = HyperbandSearch

    def preflight(self, spec: HyperbandSearch, n_classes: int, device: str) -> None:
        """Refuse trials that no node of the Ray cluster can hold: Tune would keep them pending forever."""
        import ray

        _connect_ray()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        wants = {"CPU": spec.options.trial_cpus, "GPU": spec.gpus}
        if not any(all(node.get(k, 0) >= v for k, v in wants.items()) for node in nodes):
            largest = {k: max((node.get(k, 0) for node in nodes), default=0) for k in wants}
            raise ResourceError(
                f"each trial asks for {wants['CPU']:g} CPU and {wants['GPU']:g} GPU (options.trial_cpus, gpus), "
                f"but no Ray node has that much (the largest offer {largest['CPU']:g} CPU, {largest['GPU']:g} GPU): "
                "lower options.trial_cpus or gpus, or add a node that has them"
            )

    def run(self, ctx: SearchContext) -> SearchResult:
        _connect_ray()
        return run_folds(ctx, lambda fold, fold_dir: _run_fold(ctx, fold, fold_dir))


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a fold needs, in plain values: Tune ships it to each trial's actor once."""

    spec: HyperbandSearch
    data: PreparedData
    plan: FoldPlan


def _run_fold(ctx: SearchContext, fold: Fold, fold_dir: Path) -> FoldResult:
    spec: HyperbandSearch = ctx.spec
    plan = plan_holdout_fold(ctx, fold, spec.options.validation_fraction)
    best = _tune(ctx, TrialJob(spec, ctx.data, plan))
    family, values = split_config(spec, best.config)
    score = _rank(best, f"val_{spec.objective}")[0]
    ctx.reporter.log(f"fold {fold.index}: best configuration {family} {values} (val {spec.objective} {score:.3f})")
    return retrain_and_test(ctx, plan, genome_of(spec, ctx.data.classes, best.config), fold_dir)


def genome_of(spec: HyperbandSearch, classes: tuple[str, ...], config: dict[str, Any]) -> Genome:
    """The genome of one sampled configuration; it trains for `options.max_epochs` (Hyperband's R)."""
    family, values = split_config(spec, config)
    architecture, recipe = realise(family, {**spec.space.fixed.get(family, {}), **values})
    recipe = recipe.model_copy(update={"epochs": spec.options.max_epochs})
    return Genome(input=spec.features, architecture=architecture, classes=classes, training=recipe)


def split_config(spec: HyperbandSearch, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(family, its hyperparameters) of a configuration.

    With one family a configuration is that family's hyperparameters. With several, `family` is a
    choice and each family's hyperparameters sit under its name (`{"family": "lstm-cnn", "lstm-cnn":
    {...}}`; Tune nests Optuna's `lstm-cnn/blocks` so): random search draws every family's (only the
    chosen family's are used), TPE draws only the chosen family's.
    """
    families = spec.space.families
    if len(families) == 1:
        return families[0], dict(config)
    family = config[FAMILY]
    return family, dict(config[family])


def _param_space(spec: HyperbandSearch) -> dict[str, Any]:
    """Ray Tune domains of the random sampler (every family's hyperparameters, see `split_config`)."""
    from ray import tune

    families = spec.space.families
    if len(families) == 1:
        return to_tune(spec.space.distributions(families[0]))
    return {FAMILY: tune.choice(list(families))} | {f: to_tune(spec.space.distributions(f)) for f in families}


@dataclass(frozen=True)
class _DefineByRun:
    """Optuna's define-by-run space for TPE: the family first, then only its hyperparameters.

    A class, not a closure: Tune pickles its searcher with every experiment snapshot."""

    spec: HyperbandSearch

    def __call__(self, trial: Any) -> None:
        families = self.spec.space.families
        if len(families) == 1:
            suggest(trial, self.spec.space.distributions(families[0]))
            return
        family = trial.suggest_categorical(FAMILY, list(families))
        suggest(trial, {f"{family}/{k}": v for k, v in self.spec.space.distributions(family).items()})


def _tune(ctx: SearchContext, job: TrialJob) -> Any:
    """Run (or resume) the fold's Tune experiment; the best trial's result by validation objective."""
    from ray import tune

    spec, options = job.spec, job.spec.options
    fold = job.plan.fold.index
    path = experiment_dir(ctx.workdir, fold).resolve()  # Tune reads a relative path as a URI without a scheme
    metric = f"val_{spec.objective}"
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, job=job), {"cpu": options.trial_cpus, "gpu": spec.gpus}
    )
    assert _ReporterCallback.sink is None, "one Tune experiment at a time in a process (folds run one by one)"
    _ReporterCallback.sink = _Sink(ctx, job)
    # Tune snapshots the experiment (what `Tuner.restore` reads) every 10 s or more by default, and after a
    # trial's checkpoint (one per epoch here, with a warning we silence: it is what we want). A search killed
    # or cancelled between snapshots comes back with older trial states and re-runs a few epochs: 2 s at most.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose 0: no tables on stdout; our Reporter logs trials
    try:
        if tune.Tuner.can_restore(path):
            ctx.reporter.log(f"fold {fold}: resuming the Tune experiment in {path}")
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(spec) if options.sampler == "random" else None,
                tune_config=tune.TuneConfig(
                    metric=metric,
                    mode="max",
                    num_samples=options.trials(),
                    scheduler=_scheduler(spec),
                    search_alg=_searcher(spec, metric, fold),
                    max_concurrent_trials=options.parallel_trials,
                ),
                run_config=tune.RunConfig(
                    name=path.name,
                    storage_path=str(path.parent),
                    callbacks=[_ReporterCallback()],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=0),
                    verbose=0,
                ),
            )
        results = tuner.fit()
    except SearchCancelled:
        raise
    except Exception as exc:
        if ctx.is_cancelled():  # the callback's SearchCancelled, wrapped by Tune
            raise SearchCancelled("search cancelled; resume continues the Tune experiment") from exc
        raise
    finally:
        _ReporterCallback.sink = None
    if ctx.is_cancelled():
        raise SearchCancelled("search cancelled; resume continues the Tune experiment")
    scored = [r for r in results if r.metrics and metric in r.metrics and r.error is None]
    if not scored:
        errors = "; ".join(f"{type(r.error).__name__}: {r.error}" for r in results if r.error is not None)
        raise SernasError(
            f"fold {fold}: no Hyperband trial finished an epoch" + (f" ({errors[:500]})" if errors else "")
        )
    return max(scored, key=lambda r: _rank(r, metric))


def _rank(result: Any, metric: str) -> tuple[float, float, str]:
    """A trial's rank, larger is better: its best epoch by the objective (as Hyperband ranks a trial), ties
    to the lower validation loss at that epoch, then to the configuration's JSON, so that the choice never
    depends on the order in which Ray lists its results."""
    epochs = result.metrics_dataframe.sort_values([metric, "val_loss"], ascending=[False, True])
    best = epochs.iloc[0]
    return float(best[metric]), -float(best["val_loss"]), json.dumps(result.config, sort_keys=True)


def _scheduler(spec: HyperbandSearch) -> Any:
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    options = spec.options
    if options.scheduler == "fifo":
        return FIFOScheduler()
    if options.scheduler == "hyperband":
        return ResumableHyperBand(
            time_attr="training_iteration", max_t=options.max_epochs, reduction_factor=options.reduction_factor
        )
    return AsyncHyperBandScheduler(
        time_attr="training_iteration",
        max_t=options.max_epochs,
        grace_period=options.grace_epochs,
        reduction_factor=options.reduction_factor,
    )


def _searcher(spec: HyperbandSearch, metric: str, fold: int) -> Any:
    seed = spec.seed + fold
    if spec.options.sampler == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed)
    import warnings

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # grouped TPE
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    return OptunaSearch(space=_DefineByRun(spec), metric=metric, mode="max", sampler=sampler)


def _connect_ray() -> None:
    """A local Ray when none is connected (the command line); inside a service worker, Ray's own."""
    import ray

    if not ray.is_initialized():
        # Trials' own output stays in Ray's session logs; our Reporter says what each trial did.
        if os.environ.get("RAY_ADDRESS"):  # the cluster the user names
            ray.init(logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


class ResumableHyperBand(HyperBandScheduler):
    """Ray Tune's synchronous Hyperband (Li et al., 2018), able to go on after `Tuner.restore`.

    Tune saves no scheduler state. On restore it re-adds the experiment's trials newest result first,
    all PENDING, and every bracket starts afresh; Ray's Hyperband would then seat trials in other brackets
    than before (a bracket takes trials in the order they arrive), wait forever on trials that had already
    ended, run restored trials past the rung they had reached, and raise when it halves a bracket whose
    losers include a PENDING trial. Here:

    - trials are seated in their index order once they are all known (at the next choice of a trial to
      run), which is the order a fresh experiment adds them in, so each returns to its bracket;
    - a restored trial brings its progress; one that had ended leaves its bracket;
    - a bracket is halved when its live trials all stand at its rung, whether the last one to get there
      reported just now or stood there since the restore, and a PENDING loser is stopped like a paused one.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._unseated: list[Trial] = []

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._unseated.append(trial)

    def _seat(self, tune_controller: Any) -> None:
        arrived = sorted(self._unseated, key=trial_index)
        self._unseated.clear()
        for trial in arrived:
            super().on_trial_add(tune_controller, trial)
        for trial in arrived:  # only now: a bracket with an ended trial taken out would count as unfilled
            bracket, _ = self._trial_info[trial]
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                bracket.cleanup_trial(trial)
            elif trial.last_result.get(self._time_attr):
                bracket.update_trial_stats(trial, trial.last_result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._seat(tune_controller)  # a trial stopped before it ever ran
        super().on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        self._seat(tune_controller)
        for band in self._hyperbands:
            for bracket in sorted(filter(None, band), key=lambda b: b.completion_percentage()):
                live = bracket.current_trials()
                if live and all(t.status != Trial.RUNNING for t in live):
                    self._halve(tune_controller, bracket, reporting=None)  # restored trials standing at a rung
                for trial in bracket.current_trials():
                    ready = trial.status == Trial.PENDING or (
                        trial.status == Trial.PAUSED and trial in bracket.trials_to_unpause
                    )
                    if ready and bracket.continue_trial(trial):  # not one restored at its rung
                        return trial
        return None

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        bracket, _ = self._trial_info[trial]
        bracket.update_trial_stats(trial, result)
        if bracket.continue_trial(trial):
            return TrialScheduler.CONTINUE
        return self._halve(tune_controller, bracket, reporting=trial)

    def _process_bracket(self, tune_controller: Any, bracket: Any) -> str:
        """Ray's hook after a trial is removed: no trial is reporting then."""
        return self._halve(tune_controller, bracket, reporting=None)

    def _halve(self, tune_controller: Any, bracket: Any, reporting: Trial | None) -> str:
        """Halve the bracket if all its live trials stand at its rung; the decision for `reporting`, the trial
        whose result is being processed (None when none is). Ray's own, but for trials restored PENDING at the
        rung, and with the decision always about the reporting trial: another trial can still be RUNNING while
        it saves the checkpoint of its pause, and it is stopped or resumed like a paused one."""
        if not bracket.cur_iter_done():
            return TrialScheduler.PAUSE
        live = bracket.current_trials()
        bracket.is_being_processed = True  # as Ray marks it: a trial removed meanwhile does not halve again
        if bracket.finished():  # every live trial reached max_epochs
            losers, winners = live, []
        else:
            winners, losers = bracket.successive_halving(self._metric, self._metric_op)
        action = TrialScheduler.PAUSE
        for trial in losers:
            if trial is reporting:
                bracket.cleanup_trial(trial)
                action = TrialScheduler.STOP
            else:
                tune_controller.stop_trial(trial)
        for trial in winners:
            if not bracket.continue_trial(trial):
                continue  # restored already past the next rung: it waits there
            if trial is reporting:
                action = TrialScheduler.CONTINUE
            elif trial.status == Trial.PAUSED or trial.is_saving:
                bracket.trials_to_unpause.add(trial)
        return action


# ---------------------------------------------------------------- one trial, in its Ray actor


def train_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's function trainable: one epoch per Tune iteration, a checkpoint with every report.

    The training loop checkpoints each epoch itself; that file is the Tune checkpoint. A trial that
    Hyperband paused (or whose process died) starts here again from it: `fit` restores its epochs and
    re-announces them, and only epochs beyond the restored ones reach Tune.
    """
    import torch
    from ray import tune

    from nas.metrics import count_parameters, latency_ms
    from nas.models import build
    from nas.train import TrainConfig, fit

    spec, plan, data = job.spec, job.plan, job.data
    torch.set_num_threads(max(1, int(spec.options.trial_cpus)))
    # The GPU Ray assigned this trial (CUDA_VISIBLE_DEVICES), unless the search asked for the CPU.
    device = "cuda" if spec.device != "cpu" and spec.gpus > 0 and torch.cuda.is_available() else "cpu"
    genome = genome_of(spec, data.classes, config)
    # One seed per configuration: the same weights and batches in every run, and after every pause.
    seed = spec.seed + plan.fold.index * 1000 + zlib.crc32(json.dumps(config, sort_keys=True).encode()) % 1000
    model = build(genome, seed=seed)
    model.set_scaler(plan.mean, plan.std)
    cost = {"params": count_parameters(model), **latency_ms(model, genome.input.output_shape, runs=10)}

    local = Path(tempfile.mkdtemp(prefix="sernas-trial-"))
    restored = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / _CHECKPOINT, local / _CHECKPOINT)
            restored = json.loads((Path(folder) / _EPOCHS).read_text())["epochs"]

    def on_epoch(epoch: int, entry: dict[str, float]) -> None:
        if epoch <= restored:
            return  # Tune has it already
        # The loop's checkpoint folder is the Tune checkpoint: Tune copies it to the experiment as it reports.
        (local / _EPOCHS).write_text(json.dumps({"epochs": epoch}))
        # `epoch` shows a resumed trial went on (not restarted); `finished_at` (Tune's own stamps are whole
        # seconds) shows which trials trained at the same time.
        extra = {"epoch": epoch, "finished_at": time.time()}
        tune.report({**entry, **cost, **extra}, checkpoint=tune.Checkpoint.from_directory(local))

    try:
        fit(
            model,
            data.training_rows(plan.train, genome.input.segments),
            data.rows(plan.validation),
            TrainConfig.of(genome.training.model_copy(update={"patience": None}), seed=seed),
            classes=data.classes,
            device=device,
            on_epoch=on_epoch,
            checkpoint_path=local / _CHECKPOINT,
        )
    finally:
        shutil.rmtree(local, ignore_errors=True)


# ---------------------------------------------------------------- Tune's events -> our Reporter


@dataclass
class _Sink:
    """The live side of the callback: this search's context and its Tune trials' ids of ours."""

    ctx: SearchContext
    job: TrialJob
    ids: dict[str, int] = field(default_factory=dict)
    cancel_checked: float = float("-inf")

    def trial_id(self, trial: Any) -> int:
        if trial.trial_id not in self.ids:
            family, values = split_config(self.job.spec, trial.config)
            params = {FAMILY: family, **values} if len(self.job.spec.space.families) > 1 else values
            self.ids[trial.trial_id] = self.ctx.reporter.start_trial(
                trial_key(self.job.plan.fold.index, trial),
                params,
                fold=self.job.plan.fold.index,
                stage=TrialStage.SEARCH,
            )
        return self.ids[trial.trial_id]


def trial_index(trial: Trial) -> int:
    """A Tune trial's index in its experiment (its tag starts with it): the order it was created in, which a
    trial that Tune re-creates after a restore from an older snapshot keeps (its random id does not)."""
    return int(trial.experiment_tag.split("_", 1)[0])


def trial_key(fold: int, trial: Trial) -> str:
    """Our key of a Tune trial."""
    return f"fold-{fold}/trial-{trial_index(trial)}"


_REPORTED = ("train_loss", "train_acc", "val_loss", "val_ua", "val_wa", "val_macro_f1", "lr")


class _ReporterCallback(Callback):
    """Forwards Tune's trial events to the search's Reporter, in this (the driver's) process.

    Tune pickles its callbacks with the experiment and unpickles them on restore, so the instance holds
    nothing; the live reporter is the class's `sink`, set while a fold's experiment runs."""

    sink: ClassVar[_Sink | None] = None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune steps many times a second; a cancel request is looked at once a second.
        now = time.monotonic()
        if now - self.sink.cancel_checked < CANCEL_POLL_SECONDS:
            return
        self.sink.cancel_checked = now
        if self.sink.ctx.is_cancelled():
            raise SearchCancelled("search cancelled; resume continues the Tune experiment")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.sink.trial_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        entry = {k: float(result[k]) for k in (*_REPORTED, "params", "latency_ms_p50") if k in result}
        self.sink.ctx.reporter.report(self.sink.trial_id(trial), int(result["training_iteration"]), entry)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = int(trial.last_result.get("training_iteration", 0))
        # Tune ends a trial that Hyperband stopped at a rung the same way as one that ran out its epochs.
        state = TrialState.COMPLETE if epochs >= self.sink.job.spec.options.max_epochs else TrialState.PRUNED
        self._finish(trial, state)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, TrialState.FAILED)

    def _finish(self, trial: Any, state: TrialState) -> None:
        sink, spec = self.sink, self.sink.job.spec
        last = trial.last_result or {}
        epochs = int(last.get("training_iteration", 0))
        metrics: dict[str, Any] = {"epochs": epochs, "tune_trial": trial.trial_id}
        metrics |= {k: last[k] for k in ("params", "latency_ms_p50") if k in last}
        best = trial.metric_analysis.get(f"val_{spec.objective}", {}).get("max")
        if best is not None:
            metrics[f"val_{spec.objective}"] = float(best)
        sink.ctx.reporter.finish_trial(sink.trial_id(trial), state, metrics)
        score = "" if best is None else f", best val {spec.objective} {best:.3f}"
        sink.ctx.reporter.log(
            f"{trial_key(sink.job.plan.fold.index, trial)} ({trial.trial_id}): {state.value} after {epochs} epoch(s)"
            f"{score}"
        )
