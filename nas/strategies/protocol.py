"""The fold protocol every strategy shares: folds, the scaler, retrain, test once, summarise, and the
model a user takes home.

Speaker-independent throughout: a fold's test speakers are never seen by a search or a
training run of that fold, and they are scored once, by `retrain_and_test`, after the fold's
genome is fixed. What chooses (a trial, an epoch, the exported genome) is always a validation
score on the search's objective. Each fold's retrained model leaves its bundle, a `result.json`
marker (a resumed search never runs a finished fold again) and `predictions.npz`: class
probabilities on its validation and test rows, keyed by utterance, which ensembles of finished
trials read later.

The folds estimate; the export uses everything: after the folds, the genome chosen on validation
(`choose_genome`) is trained once more on every speaker of the corpus, minus a speaker-disjoint
validation group that stops it early (`train_on_every_speaker`), and that model is the search's export.
The fold estimate (mean and spread over folds, and how many folds and test speakers are behind it) is
what its metrics report as its expected quality on new speakers: no speaker is left to test it on.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from nas.bundle import (
    FOLD_DONE,
    PREDICTIONS,
    PREDICTIONS_ARTIFACT,
    WEIGHTS,
    WEIGHTS_ARTIFACT,
    load_model,
    save_model,
)
from nas.data.folds import Fold, make_folds, speaker_folds
from nas.dataset import PreparedData
from nas.errors import DataError
from nas.features.scaling import fit_scaler
from nas.genome import Genome, Provenance
from nas.metrics import CALIBRATION_KEYS, classification_report, count_parameters, latency_ms, mean_std
from nas.reporting import TrialStage, TrialState, format_duration
from nas.robustness import NOISE_KEYS, scores_under_noise
from nas.strategies.base import FinalModel, FoldResult, SearchContext, SearchResult
from nas.train import FitResult, TrainConfig, fit, fit_temperature, predict_proba

SUMMARY_KEYS = ("ua", "wa", "macro_f1")
FINAL = str(TrialStage.FINAL)  # the folder, in a search's workdir, of the model trained on every speaker
# The share of the corpus's speakers that stops the final model early: 2-3 of RAVDESS' 12 actors, enough
# utterances (120-180) that the stopping epoch does not hinge on a handful of them.
FINAL_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class FoldPlan:
    """One fold's rows: what trains the fold's model, what stops it early, what tests it; and its scaler."""

    fold: Fold
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def plan_fold(spec: Any, data: PreparedData, fold: Fold, train: np.ndarray, validation: np.ndarray) -> FoldPlan:
    """The plan of a fold whose training pool is cut into `train` and `validation`; the scaler is
    fitted on the fold's training speakers only."""
    pool = fold.train_indices(data.utterances)
    assert set(train.tolist()) | set(validation.tolist()) <= set(pool.tolist()), "train/validation outside the pool"
    mean, std = scaler(spec, data, pool)
    return FoldPlan(fold, train, validation, fold.test_indices(data.utterances), mean, std)


def scaler(spec: Any, data: PreparedData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per feature of `rows` under the spec's scaling (identity for none)."""
    if spec.features.scaling == "standard":
        return fit_scaler(data.x[rows], None if data.lengths is None else data.lengths[rows])
    size = spec.features.scaled_features
    return np.zeros(size, np.float32), np.ones(size, np.float32)


def holdout_speakers(data: PreparedData, fold: Fold, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of a fold's training pool, validation on held-out speakers."""
    return split_speakers(data, fold.train_indices(data.utterances), fraction, seed, f"fold {fold.index}")


def split_speakers(
    data: PreparedData, pool: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of `pool`, validation on about `fraction` of its speakers.

    Validation speakers are dealt like test speakers (gender-balanced, `speaker_folds`), so that a
    trial's validation score, like its test score, is measured on voices it never trained on.
    """
    speakers = sorted({data.utterances[i].speaker for i in pool})
    n_groups = max(2, round(1 / fraction))
    if len(speakers) < 2:
        raise DataError(
            f"{what} trains on {len(speakers)} speaker(s): a speaker-disjoint validation set needs "
            "at least 2; use fewer folds"
        )
    held_out = set(
        speaker_folds([data.utterances[i] for i in pool], min(n_groups, len(speakers)), seed)[0].test_speakers
    )
    is_validation = np.array([data.utterances[i].speaker in held_out for i in pool])
    return pool[~is_validation], pool[is_validation]


def plan_holdout_fold(ctx: SearchContext, fold: Fold, fraction: float) -> FoldPlan:
    """The plan of a fold whose trials train on its training speakers minus a speaker-disjoint validation
    group (`fraction` of them, see `holdout_speakers`) and are judged on that group only."""
    train, validation = holdout_speakers(ctx.data, fold, fraction, ctx.spec.seed + fold.index)
    ctx.reporter.log(
        f"fold {fold.index}: {len(train)} training and {len(validation)} validation utterances "
        f"(validation speakers {', '.join(sorted({ctx.data.utterances[i].speaker for i in validation}))})"
    )
    return plan_fold(ctx.spec, ctx.data, fold, train, validation)


def train_genome(
    ctx: SearchContext,
    genome: Genome,
    rows: tuple[np.ndarray, np.ndarray],
    normalisation: tuple[np.ndarray, np.ndarray],
    key: str,
    fold: int | None,
    stage: TrialStage,
    folder: Path,
    seed: int,
) -> tuple[nn.Module, FitResult, int]:
    """Train a genome by its recipe on `rows` (train, validation: early stopping), reported as trial `key`;
    the model starts from weights drawn from `seed` alone and resumes from its checkpoint in `folder`.
    Returns the model (holding its best epoch), the fit's outcome and the trial id."""
    from nas.models import build

    data = ctx.data
    assert data is not None, "training a genome needs the prepared audio"
    trial = ctx.reporter.start_trial(
        key,
        {"family": genome.family, "training": genome.training.model_dump(mode="json")},
        fold=fold,
        stage=stage,
    )
    model = build(genome, seed=seed)
    model.set_scaler(*normalisation)
    train, validation = rows
    outcome = fit(
        model,
        data.training_rows(train, genome.input.segments),
        data.rows(validation),
        TrainConfig.of(genome.training, seed=seed),
        classes=data.classes,
        device=ctx.device,
        on_epoch=lambda epoch, m: ctx.reporter.report(trial, epoch, m),
        is_cancelled=ctx.is_cancelled,
        checkpoint_path=folder / "retrain.ckpt",
        progress=ctx.progress,
    )
    return model, outcome, trial


def retrain_and_test(ctx: SearchContext, plan: FoldPlan, genome: Genome, fold_dir: Path) -> FoldResult:
    """Train a genome by its recipe on the plan's rows (early stopping on validation), then test it once."""
    data, fold = ctx.data, plan.fold
    model, outcome, trial = train_genome(
        ctx,
        genome,
        (plan.train, plan.validation),
        (plan.mean, plan.std),
        f"fold-{fold.index}/retrain/{genome.family}",
        fold.index,
        TrialStage.RETRAIN,
        fold_dir,
        seed=ctx.spec.seed + fold.index,
    )
    best_epoch = outcome.history[outcome.best_epoch - 1]  # epochs count from 1
    validation = data.rows(plan.validation)
    test = data.rows(plan.test)
    calibration: dict[str, Any] = {}
    if ctx.spec.calibrate:
        before = classification_report(
            test.y, predict_proba(model, test.x, test.lengths, device=ctx.device), data.classes
        )
        calibration = {
            "temperature": fit_temperature(model, validation, ctx.device),
            "uncalibrated": {k: before[k] for k in CALIBRATION_KEYS},
        }
    val_probs = predict_proba(model, validation.x, validation.lengths, device=ctx.device)
    test_probs = predict_proba(model, test.x, test.lengths, device=ctx.device)
    metrics: dict[str, Any] = classification_report(test.y, test_probs, data.classes) | calibration
    metrics |= {f"val_{k}": best_epoch[f"val_{k}"] for k in SUMMARY_KEYS}
    metrics |= {
        "best_epoch": outcome.best_epoch,
        "params": count_parameters(model),
        **latency_ms(model.cpu(), genome.input.output_shape, device="cpu", frames=genome.input.layout == "frames"),
        "fold": fold.index,
        "test_speakers": list(fold.test_speakers),
    }
    if ctx.spec.noise_snr_db:  # after the clean test: nothing here feeds back into any choice
        metrics["noise"] = scores_under_noise(
            model,
            genome.input,
            [data.utterances[i].path for i in plan.test],
            test.y,
            data.classes,
            ctx.spec.noise_snr_db,
            seed=ctx.spec.seed + fold.index,
            device="cpu",  # where the latency measurement above left the model
        )
    genome = genome.model_copy(
        update={
            "provenance": Provenance(
                search_id=ctx.search_id,
                trial_id=trial,
                fold=fold.index,
                metrics={k: float(metrics[k]) for k in (*SUMMARY_KEYS, f"val_{ctx.spec.objective}")},
            )
        }
    )
    weights = save_model(fold_dir, genome, model, metrics)
    predictions = fold_dir / PREDICTIONS
    np.savez(
        predictions,
        classes=np.array(data.classes),
        val_keys=np.array([str(data.utterances[i].path) for i in plan.validation]),
        val_labels=validation.y,
        val_probabilities=val_probs.astype(np.float32),
        test_keys=np.array([str(data.utterances[i].path) for i in plan.test]),
        test_labels=test.y,
        test_probabilities=test_probs.astype(np.float32),
    )
    ctx.reporter.finish_trial(
        trial, TrialState.COMPLETE, metrics, genome, {WEIGHTS_ARTIFACT: weights, PREDICTIONS_ARTIFACT: predictions}
    )
    ctx.reporter.log(
        f"fold {fold.index}: test UA {metrics['ua']:.3f} WA {metrics['wa']:.3f} ({metrics['params']:,} params)"
    )
    return FoldResult(fold.index, fold.test_speakers, genome, weights, metrics)


def fold_workdir(ctx: SearchContext, fold: Fold) -> Path:
    """Where a fold's checkpoints and models are kept."""
    return ctx.workdir / "folds" / f"fold-{fold.index}"


def run_folds(
    ctx: SearchContext, run_fold: Callable[[Fold, Path], FoldResult], folds: list[Fold] | None = None
) -> SearchResult:
    """Run `run_fold` on every fold (default: the spec's folds of the prepared data) not finished yet; the best
    fold by validation objective; the summary."""
    if folds is None:
        assert ctx.data is not None, "a strategy that reads no audio names its folds"
        folds = make_folds(ctx.spec, ctx.data.utterances)
    results = []
    left = sum(not (fold_workdir(ctx, fold) / FOLD_DONE).exists() for fold in folds)
    durations: list[float] = []
    for fold in folds:
        workdir = fold_workdir(ctx, fold)
        if (workdir / FOLD_DONE).exists():
            ctx.reporter.log(f"fold {fold.index}: already finished, not run again")
            results.append(_load_fold(workdir))
            continue
        ctx.reporter.log(f"fold {fold.index}: test speakers {', '.join(fold.test_speakers)}")
        started = time.perf_counter()
        result = run_fold(fold, workdir)
        (workdir / FOLD_DONE).write_text(json.dumps({"fold": fold.index, "test_speakers": fold.test_speakers}))
        results.append(result)
        durations.append(time.perf_counter() - started)
        left -= 1
        ctx.reporter.log(pace(fold.index, durations, left))
    best = max(results, key=lambda r: r.metrics[f"val_{ctx.spec.objective}"])
    summary = mean_std([r.metrics for r in results], SUMMARY_KEYS)
    noise = [r.metrics["noise"] for r in results if "noise" in r.metrics]
    if noise and len(noise) == len(results):  # every fold scored under noise (folds of older runs were not)
        for snr in noise[0]:
            scores = mean_std([n[snr] for n in noise], NOISE_KEYS)
            summary |= {f"awgn_{snr}db_{key}": value for key, value in scores.items()}
    final = None
    if ctx.data is not None:
        genome, agreeing = choose_genome(results, ctx.spec.objective)
        final = train_on_every_speaker(ctx, genome, agreeing, fold_estimate(results, summary))
    return SearchResult(results, best, summary, final=final)


def pace(fold: int, durations: list[float], left: int) -> str:
    """What a finished fold says: how long it took and, at the mean pace of the folds run so far, how long
    the `left` ones will take (the long searches run for hours, and a fold for minutes to an hour)."""
    done = f"fold {fold}: finished in {format_duration(durations[-1])}"
    if left == 0:
        return f"{done}; no fold left"
    remaining = format_duration(left * sum(durations) / len(durations))
    return f"{done}; {left} fold{'s' if left > 1 else ''} left, about {remaining} at this pace"


def choose_genome(results: list[FoldResult], objective: str) -> tuple[Genome, list[FoldResult]]:
    """The genome to export and the folds that chose it, decided on validation scores only: the genome most
    folds chose; among equally common ones, the best mean validation objective over its folds. (Strategies
    that search each fold anew seldom agree, and then it is the fold with the best validation score.)"""
    by_genome: dict[str, list[FoldResult]] = {}
    for result in results:
        assert isinstance(result.genome, Genome), "an ensemble of fold models cannot be trained again"
        by_genome.setdefault(_without_provenance(result.genome).model_dump_json(), []).append(result)
    chosen = max(
        by_genome.values(), key=lambda folds: (len(folds), np.mean([r.metrics[f"val_{objective}"] for r in folds]))
    )
    genome = chosen[0].genome
    assert isinstance(genome, Genome)
    return _without_provenance(genome), chosen


def _without_provenance(genome: Genome) -> Genome:
    """The genome as a network and recipe, whichever trial and fold it came from."""
    return genome.model_copy(update={"provenance": Provenance()})


def fold_estimate(results: list[FoldResult], summary: dict[str, float]) -> dict[str, Any]:
    """What the folds say about a model of this search on new speakers: the summary, its calibration error
    before and after temperature scaling where every fold was calibrated, and what is behind it."""
    estimate = {
        **summary,
        "folds": len(results),
        "test_speakers": sum(len(r.test_speakers) for r in results),
    }
    if all("temperature" in r.metrics for r in results):
        estimate |= mean_std([r.metrics for r in results], ("ece",))
        uncalibrated = mean_std([r.metrics["uncalibrated"] for r in results], ("ece",))
        estimate |= {f"uncalibrated_{key}": value for key, value in uncalibrated.items()}
    return estimate


def train_on_every_speaker(
    ctx: SearchContext, genome: Genome, chosen_from: list[FoldResult], estimate: dict[str, Any]
) -> FinalModel:
    """Train `genome` on every speaker of the corpus but a speaker-disjoint validation group that stops it
    early (`FINAL_VALIDATION_FRACTION`); no speaker is left to test it, so `estimate` is its expected quality."""
    folder = ctx.workdir / FINAL
    if (folder / FOLD_DONE).exists():
        saved, model, metrics = load_model(folder)
        assert isinstance(saved, Genome), "the final model is one network"
        if _without_provenance(saved) == genome:
            ctx.reporter.log("final model: already trained, not trained again")
            # A search extended with more folds keeps its model but not its estimate: the folds' is the new one.
            metrics |= {"chosen_from_folds": [r.fold for r in chosen_from], "expected": estimate}
            provenance = saved.provenance.model_copy(
                update={"metrics": {"ua_mean": estimate["ua_mean"], "ua_std": estimate["ua_std"]}}
            )
            saved = saved.model_copy(update={"provenance": provenance})
            return FinalModel(saved, save_model(folder, saved, model, metrics), metrics)
        ctx.reporter.log("final model: the folds now choose another genome; it is trained anew")
        shutil.rmtree(folder)
    data = ctx.data
    assert data is not None, "the final model trains on the prepared audio"
    everyone = np.arange(len(data.utterances))
    train, validation = split_speakers(data, everyone, FINAL_VALIDATION_FRACTION, ctx.spec.seed, "the final model")
    speakers = sorted({data.utterances[i].speaker for i in train})
    held_out = sorted({data.utterances[i].speaker for i in validation})
    ctx.reporter.log(
        f"final model: the genome of fold(s) {', '.join(str(r.fold) for r in chosen_from)} trained on "
        f"{len(train)} utterances of {len(speakers)} speakers, stopped early on {', '.join(held_out)}"
    )
    model, outcome, trial = train_genome(
        ctx,
        genome,
        (train, validation),
        scaler(ctx.spec, data, everyone),
        f"{FINAL}/retrain/{genome.family}",
        None,
        TrialStage.FINAL,
        folder,
        seed=ctx.spec.seed,
    )
    best_epoch = outcome.history[outcome.best_epoch - 1]
    calibration = (
        {"temperature": fit_temperature(model, data.rows(validation), ctx.device)} if ctx.spec.calibrate else {}
    )
    metrics: dict[str, Any] = {
        **calibration,
        **{f"val_{k}": best_epoch[f"val_{k}"] for k in SUMMARY_KEYS},
        "best_epoch": outcome.best_epoch,
        "params": count_parameters(model),
        **latency_ms(model.cpu(), genome.input.output_shape, device="cpu", frames=genome.input.layout == "frames"),
        "trained_on": {"utterances": len(train), "speakers": speakers},
        "validation_speakers": held_out,
        "chosen_from_folds": [r.fold for r in chosen_from],
        "expected": estimate,
    }
    genome = genome.model_copy(
        update={
            "provenance": Provenance(
                search_id=ctx.search_id,
                trial_id=trial,
                metrics={"ua_mean": estimate["ua_mean"], "ua_std": estimate["ua_std"]},
            )
        }
    )
    weights = save_model(folder, genome, model, metrics)
    ctx.reporter.finish_trial(trial, TrialState.COMPLETE, metrics, genome, {WEIGHTS_ARTIFACT: weights})
    (folder / FOLD_DONE).write_text(json.dumps({"final": True, "trained_on": len(train)}))
    return FinalModel(genome, weights, metrics)


def _load_fold(fold_dir: Path) -> FoldResult:
    genome, _, metrics = load_model(fold_dir)
    return FoldResult(metrics["fold"], tuple(metrics["test_speakers"]), genome, fold_dir / WEIGHTS, metrics)
