"""genetic-ensemble: weights for an ensemble of finished fold models by a genetic algorithm (Serra, LoopQPrize 2022).

Per fold, the members are the named trials of that fold, or the `top_k` fold models of the named searches
by validation objective; before anything runs, members that do not fit are refused by name
(`nas.trials.ensemble_members`; the service's controller runs the same check at submission). Then, per fold:

1. the weights evolve on the members' stored validation probabilities (`nas.genetic`); each restart is a
   trial `fold-K/restart-R` whose steps are its generations' best validation scores;
2. with the weights fixed, the test rows are scored once each: the weighted ensemble, the unweighted
   average, and the member with the best validation objective;
3. the fold's model is the ensemble: its genome holds the member genomes and weights, one safetensors
   file all members' weights, so it exports and predicts like any network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas.bundle import WEIGHTS_ARTIFACT, load_model, save_model
from nas.data.folds import Fold, make_folds
from nas.dataset import select_utterances
from nas.genetic import Evolution, evolve, mix
from nas.genome import EnsembleGenome, Provenance
from nas.metrics import classification_report, mean_std
from nas.models.ensemble import EnsembleModel
from nas.reporting import TrialStage, TrialState
from nas.spec import GeneticEnsembleSearch
from nas.strategies.base import FoldResult, SearchContext, SearchResult, SearchStrategy
from nas.strategies.protocol import SUMMARY_KEYS, run_folds
from nas.trials import FoldRows, ensemble_members

BASELINES = ("uniform", "best_single")  # what the weighted ensemble is compared with, on test, per fold


class GeneticEnsembleStrategy(SearchStrategy):
    name = "genetic-ensemble"
    spec_type = GeneticEnsembleSearch
    reads_audio = False

    def run(self, ctx: SearchContext) -> SearchResult:
        spec: GeneticEnsembleSearch = ctx.spec
        utterances, _ = select_utterances(spec.corpus, ctx.reporter)  # the listing only: no audio is decoded
        folds = make_folds(spec, utterances)
        rows = ensemble_members(spec, ctx.trials, folds, utterances)
        for fold, members in rows.items():
            ctx.reporter.log(f"fold {fold}: {len(members.members)} members: {', '.join(members.names)}")
        result = run_folds(ctx, lambda fold, fold_dir: _run_fold(ctx, fold, rows[fold.index], fold_dir), folds)
        for baseline in BASELINES:
            summary = mean_std([r.metrics[baseline] for r in result.folds], SUMMARY_KEYS)
            result.summary |= {f"{baseline}_{key}": value for key, value in summary.items()}
        result.report_lines += _comparison(result)
        return result


def _run_fold(ctx: SearchContext, fold: Fold, rows: FoldRows, fold_dir: Path) -> FoldResult:
    spec: GeneticEnsembleSearch = ctx.spec
    names = rows.names
    evolution = _evolve(ctx, fold, rows)
    weights = evolution.weights
    classes = list(rows.classes)

    def validation(member_weights: np.ndarray) -> dict[str, float]:
        report = classification_report(rows.val_labels, mix(rows.val, member_weights), classes)
        return {f"val_{key}": report[key] for key in SUMMARY_KEYS}

    def test(member_weights: np.ndarray) -> dict[str, Any]:  # once per combiner, its weights fixed
        return classification_report(rows.test_labels, mix(rows.test, member_weights), classes)

    def summary(member_weights: np.ndarray) -> dict[str, float]:
        scores = test(member_weights)
        return {key: scores[key] for key in SUMMARY_KEYS} | validation(member_weights)

    one_hot = np.eye(len(names))
    single = int(np.argmax([validation(w)[f"val_{spec.objective}"] for w in one_hot]))  # first of equals
    metrics = test(weights) | validation(weights)
    metrics["uniform"] = summary(np.full(len(names), 1 / len(names)))
    metrics["best_single"] = {"member": names[single]} | summary(one_hot[single])
    metrics |= {
        "members": [
            {"name": m.name, "family": m.genome.family, "weight": float(w)}
            for m, w in zip(rows.members, weights, strict=True)
        ],
        "ga": {"fitness": evolution.fitness, "restart": evolution.restart},
        # Members run one after the other on their own inputs: the ensemble's cost is the sum of theirs.
        **{
            key: sum(m.metrics.get(key, 0) for m in rows.members)
            for key in ("params", "latency_ms_p50", "latency_ms_mean")
        },
        "fold": fold.index,
        "test_speakers": list(fold.test_speakers),
    }
    trial = ctx.reporter.start_trial(
        f"fold-{fold.index}/ensemble", {"members": names}, fold=fold.index, stage=TrialStage.ENSEMBLE
    )
    genome = EnsembleGenome(
        members=tuple(m.genome for m in rows.members),
        weights=tuple(float(w) for w in weights),
        provenance=Provenance(
            search_id=ctx.search_id,
            trial_id=trial,
            fold=fold.index,
            metrics={k: float(metrics[k]) for k in (*SUMMARY_KEYS, f"val_{spec.objective}")},
        ),
    )
    model = EnsembleModel([load_model(m.weights.parent)[1] for m in rows.members], genome.weights)
    saved = save_model(fold_dir, genome, model, metrics)
    ctx.reporter.finish_trial(trial, TrialState.COMPLETE, metrics, genome, {WEIGHTS_ARTIFACT: saved})
    ctx.reporter.log(
        f"fold {fold.index}: test UA {metrics['ua']:.3f} weighted, {metrics['uniform']['ua']:.3f} unweighted, "
        f"{metrics['best_single']['ua']:.3f} best single member ({names[single]})"
    )
    return FoldResult(fold.index, fold.test_speakers, genome, saved, metrics)


def _evolve(ctx: SearchContext, fold: Fold, rows: FoldRows) -> Evolution:
    """The GA on the fold's validation rows; each restart a trial, each generation a step."""
    spec: GeneticEnsembleSearch = ctx.spec
    trials: dict[int, int] = {}

    def on_generation(restart: int, generation: int, scores: dict[str, float], mean_fitness: float) -> None:
        if restart not in trials:
            trials[restart] = ctx.reporter.start_trial(
                f"fold-{fold.index}/restart-{restart}",
                {"restart": restart, "members": [m.name for m in rows.members], **spec.options.model_dump()},
                fold=fold.index,
                stage=TrialStage.SEARCH,
            )
        step = {f"val_{key}": value for key, value in scores.items()} | {"fitness_mean": mean_fitness}
        ctx.reporter.report(trials[restart], generation, step)

    evolution = evolve(
        rows.val,
        rows.val_labels,
        spec.objective,
        spec.options,
        seed=spec.seed + fold.index,
        on_generation=on_generation,
        is_cancelled=ctx.is_cancelled,
    )
    for restart, trial in trials.items():
        curve = evolution.best_per_generation[restart]
        ctx.reporter.finish_trial(
            trial, TrialState.COMPLETE, {f"val_{spec.objective}": max(curve), "generations": len(curve)}
        )
    return evolution


def _comparison(result: SearchResult) -> list[str]:
    s = result.summary
    lines = ["", "| combiner (test, mean ± std over folds) | UA | WA | macro-F1 |", "|---|---|---|---|"]
    for label, prefix in (
        ("weighted (genetic)", ""),
        ("unweighted average", "uniform_"),
        ("best single", "best_single_"),
    ):
        lines.append(
            f"| {label} | "
            + " | ".join(f"{s[f'{prefix}{k}_mean']:.3f} ± {s[f'{prefix}{k}_std']:.3f}" for k in SUMMARY_KEYS)
            + " |"
        )
    return lines
