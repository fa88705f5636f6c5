"""A tiny TPE-ASHA search with waveform augmentation trains on the augmented copies and scores originals only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from nas import train as training
from nas.augment.waveform import AudioAugment
from nas.data.corpora import read_corpus
from nas.dataset import Examples
from nas.reporting import InMemoryReporter
from nas.runner import run_search
from nas.strategies import protocol

from .conftest import CLASSES, tiny_spec


def test_tpe_asha_trains_on_originals_and_their_copies(
    small_corpus: Path, feature_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[tuple[str, int, int]] = []

    def counting(module: Any, name: str) -> None:
        real = module.fit

        def fit(model: Any, train: Examples, validation: Examples, *args: Any, **kwargs: Any) -> Any:
            sizes.append((name, len(train), len(validation)))
            return real(model, train, validation, *args, **kwargs)

        monkeypatch.setattr(module, "fit", fit)

    counting(protocol, "retrain")
    counting(training, "trial")  # the search trials import it when they start
    spec = tiny_spec("tpe-asha", small_corpus).model_copy(update={"augment": AudioAugment(copies=1)})
    reporter = InMemoryReporter()
    result = run_search(spec, tmp_path / "run", cache_dir=feature_cache, reporter=reporter, progress=False)

    assert result.folds and result.final is not None
    fold_line = next(m for line in reporter.messages if (m := re.search(r"(\d+) training and (\d+) validation", line)))
    n_train, n_validation = map(int, fold_line.groups())
    *in_folds, final = sizes  # the model trained on every speaker comes last
    assert {name for name, _, _ in in_folds} == {"trial", "retrain"}
    assert all((train, validation) == (2 * n_train, n_validation) for _, train, validation in in_folds)
    trained_on = result.final.metrics["trained_on"]["utterances"]
    assert final[:2] == ("retrain", 2 * trained_on) and trained_on + final[2] == len(
        [u for u in read_corpus("ravdess", small_corpus).utterances if u.label in CLASSES.values()]
    )
