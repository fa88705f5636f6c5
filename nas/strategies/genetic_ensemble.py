"""genetic-ensemble: weights for an ensemble of finished fold models by a genetic algorithm (Serra, LoopQPrize 2022).

Per fold, the members are the named trials of that fold, or the `top_k` fold models of the named searches
by validation objective. Before anything runs, the search is refused (naming the members and what
differs) when a member's search used another corpus, other folds or another seed, or when members were
validated or tested on other rows than each other and than this search's fold. Then, per fold:

1. the weights evolve on the members' stored validation probabilities (`nas.genetic`); each restart is a
   trial `fold-K/restart-R` whose steps are its generations' best validation scores;
2. with the weights fixed, the test rows are scored once each: the weighted ensemble, the unweighted
   average, and the member with the best validation objective;
3. the fold's model is the ensemble: its genome holds the member genomes and weights, one safetensors
   file all members' weights, so it exports and predicts like any network.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from nas.bundle import WEIGHTS_ARTIFACT, load_model, save_model
from nas.data.folds import Fold
from nas.dataset import select_utterances
from nas.errors import ConfigError
from nas.genetic import Evolution, evolve, mix
from nas.genome import EnsembleGenome, Provenance
from nas.metrics import classification_report, mean_std
from nas.models.ensemble import EnsembleModel
from nas.reporting import TrialState
from nas.spec import GeneticEnsembleSearch, parse_spec
from nas.strategies.base import FoldResult, SearchContext, SearchResult, SearchStrategy
from nas.strategies.protocol import SUMMARY_KEYS, make_folds, run_folds
from nas.trials import FoldModel, Predictions, read_predictions

BASELINES = ("uniform", "best_single")  # what the weighted ensemble is compared with, on test, per fold


class GeneticEnsembleStrategy(SearchStrategy):
    name = "genetic-ensemble"
    spec_type = GeneticEnsembleSearch
    reads_audio = False

    def run(self, ctx: SearchContext) -> SearchResult:
        spec: GeneticEnsembleSearch = ctx.spec
        utterances, _ = select_utterances(spec.corpus, ctx.reporter)  # the listing only: no audio is decoded
        folds = make_folds(spec, utterances)
        members = choose_members(ctx, folds)
        rows = {fold.index: _fold_rows(fold, members[fold.index], utterances) for fold in folds}
        result = run_folds(ctx, lambda fold, fold_dir: _run_fold(ctx, fold, rows[fold.index], fold_dir), folds)
        for baseline in BASELINES:
            summary = mean_std([r.metrics[baseline] for r in result.folds], SUMMARY_KEYS)
            result.summary |= {f"{baseline}_{key}": value for key, value in summary.items()}
        result.report_lines += _comparison(result)
        return result


def choose_members(ctx: SearchContext, folds: list[Fold]) -> dict[int, list[FoldModel]]:
    """Per fold index, its members; refuses members that do not fit this search."""
    spec: GeneticEnsembleSearch = ctx.spec
    wanted = {fold.index for fold in folds}
    by_fold: dict[int, list[FoldModel]] = defaultdict(list)
    if spec.space.trials:
        for model in ctx.trials.trials(spec.space.trials):
            if model.fold not in wanted:
                raise ConfigError(f"{model.name} is of fold {model.fold}, which this search does not run")
            by_fold[model.fold].append(model)
    else:
        key = f"val_{spec.objective}"
        for search in spec.space.searches:
            for model in ctx.trials.fold_models(search):
                if model.fold in wanted:
                    by_fold[model.fold].append(model)
        for fold, models in by_fold.items():
            ranked = sorted(models, key=lambda m: (-float(m.metrics.get(key, float("-inf"))), m.name))
            by_fold[fold] = ranked[: spec.space.top_k]
    _check_searches(spec, [m for models in by_fold.values() for m in models])
    empty = sorted(wanted - {fold for fold, models in by_fold.items() if models})
    if empty:
        named = ", ".join(spec.space.searches) or ", ".join(map(str, spec.space.trials))
        raise ConfigError(f"folds {empty} have no finished fold model among the members ({named})")
    for fold in sorted(by_fold):
        names = ", ".join(m.name for m in by_fold[fold])
        ctx.reporter.log(f"fold {fold}: {len(by_fold[fold])} members: {names}")
    return dict(by_fold)


def _check_searches(spec: GeneticEnsembleSearch, members: list[FoldModel]) -> None:
    """Members' searches must share this search's corpus, folds and seed: else their rows differ."""
    problems = []
    for member in members:
        try:
            theirs = parse_spec(member.search_spec)
        except ValidationError as exc:
            raise ConfigError(f"{member.name}: its search's stored spec is not readable ({exc})") from exc
        differ = [
            f"{name} {_show(getattr(theirs, name))} (this search: {_show(getattr(spec, name))})"
            for name in ("corpus", "seed")
            if getattr(theirs, name) != getattr(spec, name)
        ]
        differ += [
            f"folds.{name} {getattr(theirs.folds, name)} (this search: {getattr(spec.folds, name)})"
            for name in ("by", "n_folds")
            if getattr(theirs.folds, name) != getattr(spec.folds, name)
        ]
        if differ:
            problems.append(f"{member.name}: {', '.join(differ)}")
    if problems:
        raise ConfigError(
            "members must come from searches with this search's corpus, folds and seed; " + "; ".join(problems)
        )


def _show(value: Any) -> str:
    return value.model_dump_json(exclude_defaults=True) if hasattr(value, "model_dump_json") else repr(value)


class FoldRows:
    """A fold's members and their stored predictions, aligned on the same validation and test rows."""

    def __init__(self, members: list[FoldModel], stored: list[Predictions]) -> None:
        first = stored[0]
        self.members = members
        self.classes = first.classes
        self.val_labels, self.test_labels = first.val_labels, first.test_labels
        self.val = np.stack([_aligned(p.val_keys, first.val_keys, p.val_probabilities) for p in stored])  # (M, N, K)
        self.test = np.stack([_aligned(p.test_keys, first.test_keys, p.test_probabilities) for p in stored])


def _fold_rows(fold: Fold, members: list[FoldModel], utterances: list[Any]) -> FoldRows:
    stored = [read_predictions(m) for m in members]
    first, reference = members[0], stored[0]
    fold_test = {str(u.path) for u in utterances if u.speaker in set(fold.test_speakers)}
    if set(reference.test_keys.tolist()) != fold_test:
        raise ConfigError(
            f"{first.name} was tested on {len(reference.test_keys)} utterances, but this search's fold "
            f"{fold.index} tests {len(fold_test)} (speakers {', '.join(fold.test_speakers)}): the corpus selection "
            "differs from the member's search"
        )
    for member, predictions in zip(members[1:], stored[1:], strict=True):
        if predictions.classes != reference.classes:
            raise ConfigError(
                f"{member.name} predicts classes {list(predictions.classes)}, {first.name} "
                f"{list(reference.classes)}: members must predict the same classes"
            )
        for rows, keys, ours in (
            ("validation", predictions.val_keys, reference.val_keys),
            ("test", predictions.test_keys, reference.test_keys),
        ):
            if set(keys.tolist()) != set(ours.tolist()):
                common = len(set(keys.tolist()) & set(ours.tolist()))
                raise ConfigError(
                    f"{member.name} and {first.name} were scored on different {rows} rows ({common} of "
                    f"{len(keys)} and {len(ours)} in common): members must hold out the same validation speakers "
                    "(the same validation_fraction; emoDARTS splits by utterance, so its fold models pair only "
                    "with other emoDARTS searches)"
                )
    return FoldRows(members, stored)


def _aligned(keys: np.ndarray, order: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    position = {key: i for i, key in enumerate(keys.tolist())}
    return probabilities[[position[key] for key in order.tolist()]].astype(np.float64)


def _run_fold(ctx: SearchContext, fold: Fold, rows: FoldRows, fold_dir: Path) -> FoldResult:
    spec: GeneticEnsembleSearch = ctx.spec
    names = [m.name for m in rows.members]
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
        f"fold-{fold.index}/ensemble", {"members": names}, fold=fold.index, stage="ensemble"
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
                stage="search",
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
