"""emoDARTS: per fold, search a CNN + SeqNN supernet, derive its genome, retrain it, test it once.

Protocol (REFERENCE section 1, DESIGN "Data protocol"): the fold's training speakers split
70/30 into a search set and a training set; the search set is halved into weight and
architecture parts; the derived model trains on the training set with a validation
carve-out for early stopping; the fold's held-out speakers are scored once at the end.
Every stage checkpoints, and a finished fold is never run again, so an interrupted
search resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas.bundle import load_model, save_model
from nas.darts.memory import check_fits, estimate_search_memory
from nas.darts.search import SearchData, run_search
from nas.data.folds import DartsSplit, Fold, darts_split, session_folds, speaker_folds
from nas.errors import ConfigError
from nas.features.scaling import apply_scaler, fit_scaler
from nas.genome import EmoDartsArchitecture, Genome, Provenance, build_model
from nas.metrics import count_parameters, latency_ms, mean_std
from nas.reporting import TrialState
from nas.spec import SearchSpec
from nas.strategies.base import FoldResult, PreparedData, SearchContext, SearchResult, SearchStrategy
from nas.train import TrainConfig, evaluate, fit

SUMMARY_KEYS = ("ua", "wa", "macro_f1")


class DartsStrategy(SearchStrategy):
    name: ClassVar[str] = "darts"

    def preflight(self, spec: SearchSpec, n_classes: int) -> None:
        """Refuse, before any work, a search whose supernet will not fit in memory."""
        estimate = estimate_search_memory(
            spec.space,
            spec.features.output_shape,
            n_classes,
            spec.options.batch_size,
            spec.options.second_order,
        )
        limit = spec.options.memory_limit_gb
        check_fits(estimate, None if limit is None else int(limit * 2**30))

    def run(self, ctx: SearchContext) -> SearchResult:
        self.preflight(ctx.spec, len(ctx.data.classes))
        results = []
        for fold in make_folds(ctx.spec, ctx.data):
            fold_dir = ctx.workdir / "folds" / f"fold-{fold.index}"
            done = fold_dir / "result.json"
            if done.exists():
                ctx.reporter.log(f"fold {fold.index}: already finished, not run again")
                results.append(_load_fold(fold_dir))
                continue
            ctx.reporter.log(f"fold {fold.index}: test speakers {', '.join(fold.test_speakers)}")
            results.append(_run_fold(ctx, fold, fold_dir))
        best = max(results, key=lambda r: r.metrics["val_ua"])
        summary = mean_std([r.metrics for r in results], SUMMARY_KEYS)
        return SearchResult(results, best, summary)


def make_folds(spec: SearchSpec, data: PreparedData) -> list[Fold]:
    if spec.folds.by == "session":
        folds = session_folds(data.utterances)
    else:
        folds = speaker_folds(data.utterances, spec.folds.n_folds, spec.seed)
    if spec.folds.only is None:
        return folds
    unknown = sorted(set(spec.folds.only) - {f.index for f in folds})
    if unknown:
        raise ConfigError(f"folds.only names folds {unknown}, but there are only folds 0..{len(folds) - 1}")
    return [f for f in folds if f.index in spec.folds.only]


@dataclass(frozen=True)
class FoldPlan:
    """One fold's data protocol: the DARTS split of its training pool, its test rows, its scaler."""

    fold: Fold
    split: DartsSplit
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def plan_fold(spec: SearchSpec, data: PreparedData, fold: Fold) -> FoldPlan:
    train_pool = fold.train_indices(data.utterances)
    split = darts_split(
        data.utterances,
        train_pool,
        spec.seed + fold.index,
        spec.options.search_fraction,
        spec.options.validation_fraction,
    )
    if spec.features.scaling == "standard":
        mean, std = fit_scaler(data.x[train_pool])  # training speakers only
    else:
        n_features = data.x.shape[2]
        mean, std = np.zeros(n_features, np.float32), np.ones(n_features, np.float32)
    return FoldPlan(fold, split, fold.test_indices(data.utterances), mean, std)


def _run_fold(ctx: SearchContext, fold: Fold, fold_dir: Path) -> FoldResult:
    plan = plan_fold(ctx.spec, ctx.data, fold)
    genome = _search(ctx, plan, fold_dir)
    result = retrain_and_test(ctx, plan, genome, fold_dir)
    (fold_dir / "result.json").write_text(json.dumps({"fold": fold.index, "test_speakers": fold.test_speakers}))
    return result


def retrain_and_test(ctx: SearchContext, plan: FoldPlan, genome: Genome, fold_dir: Path) -> FoldResult:
    """Train a genome on the fold's training set (early stopping on validation), then test it once."""
    spec, data, options, fold = ctx.spec, ctx.data, ctx.spec.options, plan.fold
    trial = ctx.reporter.start_trial(
        f"fold-{fold.index}/retrain/{genome.kind}", {"fold": fold.index, "stage": "retrain"}
    )
    model = build_model(genome)
    model.set_scaler(plan.mean, plan.std)
    config = TrainConfig(
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
        seed=spec.seed + fold.index,
    )
    outcome = fit(
        model,
        (data.x[plan.split.train], data.y[plan.split.train]),
        (data.x[plan.split.validation], data.y[plan.split.validation]),
        config,
        classes=data.classes,
        device=ctx.device,
        on_epoch=lambda epoch, m: ctx.reporter.report(trial, epoch, m),
        is_cancelled=ctx.is_cancelled,
        checkpoint_path=fold_dir / "retrain.ckpt",
        progress=ctx.progress,
    )
    best_epoch = outcome.history[outcome.best_epoch - 1]  # epochs count from 1
    metrics: dict[str, Any] = evaluate(model, data.x[plan.test], data.y[plan.test], data.classes, device=ctx.device)
    metrics |= {
        "val_ua": best_epoch["val_ua"],
        "best_epoch": outcome.best_epoch,
        "params": count_parameters(model),
        **latency_ms(model.cpu(), genome.input.output_shape, device="cpu"),
        "fold": fold.index,
        "test_speakers": list(fold.test_speakers),
    }
    genome = genome.model_copy(
        update={
            "provenance": Provenance(
                search_id=ctx.search_id,
                trial_id=trial,
                fold=fold.index,
                metrics={k: float(metrics[k]) for k in (*SUMMARY_KEYS, "val_ua")},
            )
        }
    )
    weights = save_model(fold_dir, genome, model, metrics)
    ctx.reporter.finish_trial(trial, TrialState.COMPLETE, metrics, genome, {"weights": weights})
    ctx.reporter.log(
        f"fold {fold.index}: test UA {metrics['ua']:.3f} WA {metrics['wa']:.3f} ({metrics['params']:,} params)"
    )
    return FoldResult(fold.index, fold.test_speakers, genome, weights, metrics)


def _search(ctx: SearchContext, plan: FoldPlan, fold_dir: Path) -> Genome:
    """Search the supernet on the fold's search set and derive its genome (reused on resume)."""
    spec, data, fold, split = ctx.spec, ctx.data, plan.fold, plan.split
    derived = fold_dir / "search" / "genome.json"
    if derived.exists():
        return Genome.model_validate_json(derived.read_text())
    trial = ctx.reporter.start_trial(
        f"fold-{fold.index}/search",
        {"fold": fold.index, "stage": "search", "space": spec.space.model_dump(mode="json")},
    )
    evolution = fold_dir / "search" / "genomes.jsonl"
    evolution.parent.mkdir(parents=True, exist_ok=True)

    written = len(evolution.read_text().splitlines()) if evolution.exists() else 0

    def on_epoch(epoch: int, metrics: dict[str, float], arch: EmoDartsArchitecture) -> None:
        nonlocal written
        ctx.reporter.report(trial, epoch, metrics)
        if epoch > written:  # resumed searches report their restored epochs again
            with evolution.open("a") as out:  # the architecture as it evolves, one line per epoch
                out.write(json.dumps({"epoch": epoch, "architecture": arch.model_dump(mode="json")}) + "\n")
            written = epoch

    search_data = SearchData(
        weights=(apply_scaler(data.x[split.weights], plan.mean, plan.std), data.y[split.weights]),
        arch=(apply_scaler(data.x[split.arch], plan.mean, plan.std), data.y[split.arch]),
        classes=data.classes,
    )
    net = run_search(
        spec.space,
        spec.options,
        search_data,
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
        hyperparameters=spec.options.model_dump(mode="json"),
        flags=tuple(architecture.flags()),
    )
    if genome.flags:
        ctx.reporter.log(f"fold {fold.index}: derived genome flagged: {', '.join(genome.flags)}")
    derived.write_text(genome.model_dump_json(indent=2))
    ctx.reporter.finish_trial(
        trial, TrialState.COMPLETE, {"alphas": net.alpha_weights(), "flags": list(genome.flags)}, genome
    )
    return genome


def _load_fold(fold_dir: Path) -> FoldResult:
    genome, _, metrics = load_model(fold_dir)
    return FoldResult(
        metrics["fold"],
        tuple(metrics["test_speakers"]),
        genome,
        fold_dir / "weights.safetensors",
        metrics,
    )
