"""Test scores under white Gaussian noise (Li et al., 2026), on real fold models of tiny searches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.bundle import PREDICTIONS, load_model
from nas.metrics import classification_report
from nas.reporting import InMemoryReporter
from nas.robustness import scores_under_noise, white_noise
from nas.runner import run_search
from tests.strategies.conftest import tiny_spec


def test_white_noise_has_the_asked_snr_and_repeats_under_a_seed():
    signal = np.sin(np.linspace(0, 2000 * np.pi, 160_000)).astype(np.float32)
    for snr in (20.0, 0.0, -5.0):
        noisy = white_noise(signal, snr, np.random.default_rng(1))
        noise = noisy.astype(np.float64) - signal
        measured = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / np.mean(noise**2))
        assert measured == pytest.approx(snr, abs=0.05)
        np.testing.assert_array_equal(noisy, white_noise(signal, snr, np.random.default_rng(1)))


@pytest.mark.parametrize("strategy", ["tpe-asha", "hyperband"])  # frame sequences, then maps
def test_inaudible_noise_gives_the_clean_test_scores(strategy, tiny_search):
    _, _, out, _, _ = tiny_search(strategy)
    fold = out / "folds" / "fold-0"
    genome, model, _ = load_model(fold)
    stored = np.load(fold / PREDICTIONS)
    paths = [Path(key) for key in stored["test_keys"]]
    scores = scores_under_noise(model, genome.input, paths, stored["test_labels"], genome.classes, [100, 0], seed=0)
    clean = classification_report(stored["test_labels"], stored["test_probabilities"], genome.classes)
    assert scores["100"] == pytest.approx({k: clean[k] for k in ("ua", "wa", "macro_f1")}, abs=1e-9)
    assert set(scores["0"]) == {"ua", "wa", "macro_f1"} and 0 <= scores["0"]["ua"] <= 1


def test_a_search_asked_for_noise_scores_reports_them_per_fold_and_over_folds(small_corpus, feature_cache, tmp_path):
    spec = tiny_spec("tpe-asha", small_corpus, **{"options.n_trials": 2, "options.n_startup_trials": 2})
    spec = spec.model_copy(update={"noise_snr_db": (20.0, 0.0)})
    result = run_search(spec, tmp_path / "run", cache_dir=feature_cache, reporter=InMemoryReporter(), progress=False)
    noise = result.folds[0].metrics["noise"]
    assert set(noise) == {"20", "0"}
    assert result.summary["awgn_20db_ua_mean"] == noise["20"]["ua"] and result.summary["awgn_0db_ua_std"] == 0.0
