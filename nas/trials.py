"""Finished fold models of earlier searches, read-only, for strategies that build on them (genetic-ensemble),
and the choice and checks of an ensemble's members among them.

A fold model is a fold's retrained network with its stored predictions (`predictions.npz`: class
probabilities on the fold's validation and test rows, keyed by utterance). Strategies never touch SQL: the
service's workers hand them `StoreTrials` (nas/store/trials.py), the command line `FolderTrials`, which
reads the result folders that `sernas search` writes.
"""

from __future__ import annotations

import abc
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from nas.bundle import FOLD_DONE, GENOME, METRICS, PREDICTIONS, SPEC, WEIGHTS
from nas.data.folds import Fold
from nas.data.types import Utterance
from nas.errors import ConfigError
from nas.genome import Genome
from nas.spec import GeneticEnsembleSearch, parse_spec


@dataclass(frozen=True)
class FoldModel:
    name: str  # how messages name it: "trial 12 (search 3fa2...)" or "<folder> fold 0"
    search: str  # the search id, or its result folder
    search_spec: dict[str, Any]  # the spec JSON of the search that trained it
    fold: int
    genome: Genome
    metrics: dict[str, Any]  # its fold's test report and `val_<metric>` scores
    weights: Path
    predictions: Path


@dataclass(frozen=True)
class Predictions:
    classes: tuple[str, ...]
    val_keys: np.ndarray  # (N_val,) utterance paths
    val_labels: np.ndarray  # (N_val,) int64
    val_probabilities: np.ndarray  # (N_val, K)
    test_keys: np.ndarray
    test_labels: np.ndarray
    test_probabilities: np.ndarray


def read_predictions(model: FoldModel) -> Predictions:
    try:
        with np.load(model.predictions) as stored:
            return Predictions(
                classes=tuple(str(c) for c in stored["classes"]),
                **{key: stored[key] for key in Predictions.__dataclass_fields__ if key != "classes"},
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{model.name}: its stored predictions {model.predictions} cannot be read ({exc})") from exc


class TrialSource(abc.ABC):
    @abc.abstractmethod
    def trials(self, ids: Sequence[int]) -> list[FoldModel]:
        """The fold models of these trial ids, in that order; refuses ids that are not finished fold models."""

    @abc.abstractmethod
    def fold_models(self, search: str) -> list[FoldModel]:
        """Every finished fold model of a search, in fold order."""


class FolderTrials(TrialSource):
    """Fold models from result folders of `sernas search` (searches are named by folder)."""

    def trials(self, ids: Sequence[int]) -> list[FoldModel]:
        raise ConfigError(
            "trial ids name trials of the service's study database; outside the service, name result folders "
            "in space.searches"
        )

    def fold_models(self, search: str) -> list[FoldModel]:
        folder = Path(search)
        if not (folder / SPEC).is_file():
            raise ConfigError(f"{folder} is not a result folder of `sernas search` (it has no {SPEC})")
        spec = json.loads((folder / SPEC).read_text())
        models = []
        for fold_dir in sorted((folder / "folds").glob("fold-*"), key=lambda p: int(p.name.removeprefix("fold-"))):
            if not all((fold_dir / name).is_file() for name in (FOLD_DONE, GENOME, WEIGHTS, PREDICTIONS)):
                continue
            metrics = json.loads((fold_dir / METRICS).read_text())
            models.append(
                FoldModel(
                    name=f"{folder} fold {metrics['fold']}",
                    search=str(folder),
                    search_spec=spec,
                    fold=int(metrics["fold"]),
                    genome=Genome.model_validate_json((fold_dir / GENOME).read_text()),
                    metrics=metrics,
                    weights=fold_dir / WEIGHTS,
                    predictions=fold_dir / PREDICTIONS,
                )
            )
        return models


def ensemble_members(
    spec: GeneticEnsembleSearch, source: TrialSource, folds: list[Fold], utterances: Sequence[Utterance]
) -> dict[int, FoldRows]:
    """Per fold (the spec's folds of `utterances`), its members and their predictions; refuses, naming them,
    members that do not fit.

    Members are the named trials, or per fold the `top_k` fold models of the named searches by validation
    objective. They must come from searches with the spec's corpus, folds and seed, predict the same
    classes and be scored on the same validation and test rows, the test rows being the spec's fold's.
    """
    by_fold = _choose(spec, source, {fold.index for fold in folds})
    return {fold.index: _fold_rows(fold, by_fold[fold.index], utterances) for fold in folds}


def _choose(spec: GeneticEnsembleSearch, source: TrialSource, wanted: set[int]) -> dict[int, list[FoldModel]]:
    by_fold: dict[int, list[FoldModel]] = defaultdict(list)
    if spec.space.trials:
        for model in source.trials(spec.space.trials):
            if model.fold not in wanted:
                raise ConfigError(f"{model.name} is of fold {model.fold}, which this search does not run")
            by_fold[model.fold].append(model)
    else:
        key = f"val_{spec.objective}"
        for search in spec.space.searches:
            for model in source.fold_models(search):
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

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]


def _fold_rows(fold: Fold, members: list[FoldModel], utterances: Sequence[Utterance]) -> FoldRows:
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
