"""The paper's hand-designed CNN + BiLSTM(128) + attention (Rajapakshe et al., 2024), trained by the project's own
loop on exactly the rows a search's fold models trained on, and tested once on each fold's speakers: what a search
has to beat.

The recipe is the compared search's emoDARTS retraining one (SGD, lr cosine-annealed from 0.025, momentum 0.9,
`retrain_recipe`), with its epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nas.data.folds import Fold, make_folds
from nas.dataset import featurise, select_utterances
from nas.genome import CnnBiLstmAttArchitecture, Genome
from nas.metrics import mean_std
from nas.recipe import TrainRecipe
from nas.reporting import InMemoryReporter
from nas.spec import SpecBase
from nas.strategies.base import FoldResult, SearchContext
from nas.strategies.protocol import SUMMARY_KEYS, FoldPlan, retrain_and_test
from nas.train import resolve_device

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
