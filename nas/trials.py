"""Finished fold models of earlier searches, read-only, for strategies that build on them (genetic-ensemble).

A fold model is a fold's retrained network with its stored predictions (`predictions.npz`: class
probabilities on the fold's validation and test rows, keyed by utterance). Strategies never touch SQL: the
service's workers hand them `StoreTrials` (nas/store/trials.py), the command line `FolderTrials`, which
reads the result folders that `sernas search` writes.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.bundle import FOLD_DONE, GENOME, METRICS, PREDICTIONS, SPEC, WEIGHTS
from nas.errors import ConfigError
from nas.genome import Genome


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
