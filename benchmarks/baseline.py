"""The paper's hand-designed CNN + BiLSTM(128) + attention (Rajapakshe et al., 2024), trained by the project's own
loop on exactly the rows a search's fold models trained on, and tested once on each fold's speakers: what a search
has to beat.

The recipe is the compared search's emoDARTS retraining one (SGD, lr cosine-annealed from 0.025, momentum 0.9,
`retrain_recipe`), with its epochs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.data.folds import Fold, make_folds
from nas.dataset import featurise, select_utterances
from nas.features.spec import FeatureSpec
from nas.genome import CnnBiLstmAttArchitecture, Genome
from nas.metrics import mean_std
from nas.recipe import TrainRecipe
from nas.reporting import InMemoryReporter
from nas.spec import SpecBase
from nas.strategies.base import FoldResult, SearchContext
from nas.strategies.darts import retrain_recipe
from nas.strategies.protocol import SUMMARY_KEYS, FoldPlan, plan_holdout_fold, retrain_and_test
from nas.train import resolve_device
from search_spaces.darts import DartsOptions

PlanOf = Callable[[SearchContext, Fold], FoldPlan]  # a fold's rows, as the compared search plans them


def train_baseline(
    spec: SpecBase, plan_of: PlanOf, recipe: TrainRecipe, out: Path
) -> tuple[dict[str, float], list[FoldResult]]:
    """(mean ± std over folds of the test metrics, each fold's result) of the baseline on `spec`'s corpus, features,
    folds and seed, each fold trained on `plan_of(ctx, fold)`'s rows."""
    reporter = InMemoryReporter()
    utterances, problems = select_utterances(spec.corpus, reporter)
    data = featurise(utterances, problems, spec.corpus, spec.features, reporter, None, progress=False)
    ctx = SearchContext(spec, data, reporter, out, resolve_device(spec.device), progress=False)
    baseline = Genome(
        input=spec.features,
        architecture=CnnBiLstmAttArchitecture(),
        classes=data.classes,
        training=recipe,
    )
    folds = [
        retrain_and_test(ctx, plan_of(ctx, fold), baseline, out / f"fold-{fold.index}")
        for fold in make_folds(spec, data.utterances)
    ]
    return mean_std([f.metrics for f in folds], SUMMARY_KEYS), folds


def holdout_baseline(
    spec: SpecBase, validation_fraction: float, epochs: int, out: Path, features: FeatureSpec | None = None
) -> dict[str, Any]:
    """The baseline on the rows of a search whose trials hold out `validation_fraction` of each fold's training
    speakers (tpe-asha, hyperband), trained for `epochs` on `features` (default: the search's; a map, since the
    baseline is a 2-D CNN): its summary and each fold's test UA."""
    summary, folds = train_baseline(
        spec if features is None else spec.model_copy(update={"features": features}),
        lambda ctx, fold: plan_holdout_fold(ctx, fold, validation_fraction),
        retrain_recipe(DartsOptions(train_epochs=epochs)),
        out,
    )
    return {"summary": summary, "test_ua": [f.metrics["ua"] for f in folds]}


def add_fold_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a benchmark that reports a search's fold estimate against the baseline over several seeds."""
    parser.add_argument("--seed", type=int, default=0, help="the spec's seed: run several for the spread")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of the search (1: reproducible beside other jobs)"
    )
    parser.add_argument("--baseline", action="store_true", help="also the paper's CNN + BiLSTM + attention, same rows")


def describe_baseline(baseline: dict[str, Any], epochs: int) -> str:
    b = baseline["summary"]
    return (
        f"baseline (CNN + BiLSTM + attention, the paper's; same rows, SGD recipe, {epochs} epochs): "
        f"test UA {b['ua_mean']:.3f} ± {b['ua_std']:.3f}, WA {b['wa_mean']:.3f} ± {b['wa_std']:.3f}; per fold "
        + ", ".join(f"{ua:.3f}" for ua in baseline["test_ua"])
    )


def export_figures(final: FoldResult | None) -> dict[str, Any] | None:
    """What a search's export (its chosen genome retrained on every speaker) trained on; None if it has none."""
    if final is None:
        return None
    return {
        "family": final.genome.family,
        "trained_on": final.metrics["trained_on"],
        "val_ua": final.metrics["val_ua"],
        "params": final.metrics["params"],
    }


def describe_export(export: dict[str, Any] | None, seed: int) -> str:
    if export is None:
        return "no export (the search ran only some folds)"
    trained_on = export["trained_on"]
    return (
        f"export (seed {seed}): {export['family']} trained on {trained_on['utterances']} utterances of "
        f"{len(trained_on['speakers'])} speakers, validation UA {export['val_ua']:.3f}, {export['params']:,} params"
    )
