"""emoDARTS: per fold, search a CNN + SeqNN supernet, derive its genome, retrain it, test it once.

Protocol (Rajapakshe et al., 2024): the fold's training speakers split 70/30 into a search set
and a training set; the search set is halved into weight and architecture parts; the derived
model trains on the training set with a validation carve-out for early stopping; the fold's
held-out speakers are scored once at the end (`protocol.retrain_and_test`). Every stage
checkpoints, and a finished fold is never run again, so an interrupted search resumes where it
stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from nas.darts.footprint import GB, check_fits
from nas.darts.search import SearchData, measure_step_seconds, search_supernet
from nas.data.folds import DartsSplit, Fold, darts_split, make_folds
from nas.features.scaling import apply_scaler
from nas.genome import EmoDartsArchitecture, Genome
from nas.recipe import TrainRecipe
from nas.reporting import STEP_GENOME, TrialStage, TrialState, format_duration
from nas.spec import DartsSearch
from nas.strategies.base import FoldResult, SearchContext, SearchResult, SearchStrategy
from nas.strategies.protocol import FoldPlan, fold_workdir, plan_fold, retrain_and_test, run_folds
from nas.train import Examples
from search_spaces.darts import DartsOptions

LONG_SEARCH_SECONDS = 3600  # beyond this, the estimate also says how to stop, resume or shrink a search


class DartsStrategy(SearchStrategy):
    name: ClassVar[str] = "darts"
    spec_type: ClassVar[type[DartsSearch]] = DartsSearch

    def preflight(self, spec: DartsSearch, n_classes: int, device: str) -> None:
        """Refuse, before any work, a search whose supernet will not fit in the memory of `device`: the GPU's
        free memory, or the memory this machine has available now (or `options.memory_limit_gb`)."""
        from nas.darts.memory import available_memory

        estimate = spec.memory_estimate(n_classes)
        limit = spec.options.memory_limit_gb
        if limit is not None:
            check_fits(estimate, int(limit * GB), "allowed by options.memory_limit_gb")
        else:
            check_fits(estimate, available_memory(device), f"available on {device}")

    def run(self, ctx: SearchContext) -> SearchResult:
        assert ctx.data is not None, "emoDARTS reads audio"
        folds = make_folds(ctx.spec, ctx.data.utterances)
        _log_duration_estimate(ctx, folds)
        return run_folds(ctx, lambda fold, fold_dir: _run_fold(ctx, fold, fold_dir), folds)


def retrain_recipe(options: DartsOptions) -> TrainRecipe:
    """How emoDARTS retrains a derived genome: SGD with the search's cosine-annealed weight lr."""
    return TrainRecipe(
        epochs=options.train_epochs,
        batch_size=options.batch_size,
        optimizer="sgd",
        lr=options.w_lr,
        lr_min=options.w_lr_min,
        schedule="cosine",
        momentum=options.w_momentum,
        weight_decay=options.w_weight_decay,
        grad_clip=options.w_grad_clip,
        patience=options.patience,
    )


def _log_duration_estimate(ctx: SearchContext, folds: list[Fold]) -> None:
    """Say, before the first epoch, how long the supernet searches still to run will take on this machine (a
    search of the paper's size runs for days on a CPU): one step is measured, and the epochs a fold's search has
    already done (one line each in its `genomes.jsonl`) are not counted again."""
    spec: DartsSearch = ctx.spec
    options = spec.options
    steps = 0
    for fold in folds:
        search_dir = fold_workdir(ctx, fold) / "search"
        if (search_dir / "genome.json").exists():
            continue
        done = search_dir / "genomes.jsonl"
        epochs_left = options.search_epochs - (len(done.read_text().splitlines()) if done.exists() else 0)
        split = fold_split(ctx, fold)
        steps += epochs_left * -(-min(len(split.weights), len(split.arch)) // options.batch_size)
    if steps == 0:
        return
    assert ctx.data is not None, "emoDARTS reads audio"  # for mypy: run() checked it
    seconds = measure_step_seconds(
        spec.space, options, spec.features.output_shape, len(ctx.data.classes), device=ctx.device
    )
    hint = (
        "; it checkpoints every epoch, so a stopped search resumes with the same command, and `sernas presets` "
        "lists smaller searches"
        if steps * seconds > LONG_SEARCH_SECONDS
        else ""
    )
    ctx.reporter.log(
        f"supernet search: about {format_duration(steps * seconds)} on this machine for {steps:,} steps "
        f"({seconds:.2f} s each, measured on {ctx.device}), then each fold's retraining{hint}"
    )


def fold_split(ctx: SearchContext, fold: Fold) -> DartsSplit:
    """The emoDARTS split of a fold's training speakers (search weights / architecture, training, validation)."""
    spec: DartsSearch = ctx.spec
    assert ctx.data is not None, "emoDARTS reads audio"
    return darts_split(
        ctx.data.utterances,
        fold.train_indices(ctx.data.utterances),
        spec.seed + fold.index,
        spec.options.search_fraction,
        spec.options.validation_fraction,
    )


def fold_plan(ctx: SearchContext, fold: Fold) -> tuple[DartsSplit, FoldPlan]:
    """A fold's emoDARTS split and the plan of its retraining rows (training and validation of the split)."""
    split = fold_split(ctx, fold)
    return split, plan_fold(ctx.spec, ctx.data, fold, split.train, split.validation)


def _run_fold(ctx: SearchContext, fold: Fold, fold_dir: Path) -> FoldResult:
    split, plan = fold_plan(ctx, fold)
    genome = _search(ctx, plan, split, fold_dir)
    return retrain_and_test(ctx, plan, genome, fold_dir)


def _search(ctx: SearchContext, plan: FoldPlan, split: DartsSplit, fold_dir: Path) -> Genome:
    """Search the supernet on the fold's search set and derive its genome (reused on resume)."""
    spec: DartsSearch = ctx.spec
    data, fold = ctx.data, plan.fold
    derived = fold_dir / "search" / "genome.json"
    if derived.exists():
        return Genome.model_validate_json(derived.read_text())
    trial = ctx.reporter.start_trial(
        f"fold-{fold.index}/search",
        {"space": spec.space.model_dump(mode="json")},
        fold=fold.index,
        stage=TrialStage.SEARCH,
    )
    evolution = fold_dir / "search" / "genomes.jsonl"
    evolution.parent.mkdir(parents=True, exist_ok=True)

    written = len(evolution.read_text().splitlines()) if evolution.exists() else 0

    def on_epoch(epoch: int, metrics: dict[str, float], arch: EmoDartsArchitecture) -> None:
        nonlocal written
        # The epoch's derived cells ride on its step (~700 bytes), so the dashboard can show them evolve.
        derived_now = {"architecture": arch.model_dump(mode="json"), "flags": arch.flags()}
        ctx.reporter.report(trial, epoch, metrics | {STEP_GENOME: derived_now})
        if epoch > written:  # resumed searches report their restored epochs again
            with evolution.open("a") as out:  # the architecture as it evolves, one line per epoch
                out.write(json.dumps({"epoch": epoch, "architecture": arch.model_dump(mode="json")}) + "\n")
            written = epoch

    def scaled(rows: object) -> Examples:
        return Examples(apply_scaler(data.x[rows], plan.mean, plan.std), data.y[rows])

    net = search_supernet(
        spec.space,
        spec.options,
        SearchData(weights=scaled(split.weights), arch=scaled(split.arch), classes=data.classes),
        seed=spec.seed + fold.index,
        device=ctx.device,
        checkpoint=fold_dir / "search" / "search.ckpt",
        on_epoch=on_epoch,
        is_cancelled=ctx.is_cancelled,
        progress=ctx.progress,
    )
    architecture = net.derive()
    genome = Genome(
        input=spec.features,
        architecture=architecture,
        classes=data.classes,
        training=retrain_recipe(spec.options),
        flags=tuple(architecture.flags()),
    )
    if genome.flags:
        ctx.reporter.log(f"fold {fold.index}: derived genome flagged: {', '.join(genome.flags)}")
    ctx.reporter.finish_trial(
        trial, TrialState.COMPLETE, {"alphas": net.alpha_weights(), "flags": list(genome.flags)}, genome
    )
    # Written only once the trial is recorded: a resume that finds this file skips the trial, so a worker
    # killed between the two must leave the file missing (the resume then derives it again), not the record.
    derived.write_text(genome.model_dump_json(indent=2))
    return genome
