"""Every searchable family is searchable by the hyperparameter strategies: MACNN-ICASA on 2 s segments of MFCC
frames and HMoE-SiMBA on whole frame sequences, through a real tiny tpe-asha search each (fold 0 of 4, calm vs
angry)."""

from __future__ import annotations

import numpy as np
import pytest

from nas.bundle import PREDICTIONS
from nas.data.corpora import read_corpus
from nas.errors import ConfigError
from nas.reporting import InMemoryReporter, TrialState
from nas.runner import run_search
from nas.spec import CorpusSpec, FoldSpec, spec_from_preset
from search_spaces import macnn
from tests.strategies.conftest import CLASSES

TINY_BUDGET = {
    "options.n_trials": 2,
    "options.n_startup_trials": 2,
    "options.max_epochs": 2,
    "options.min_resource": 1,
}
MACNN = {
    "space.family": "macnn-icasa",
    "space.params": {"attention": {"type": "categorical", "choices": ["icasa", "none"]}},
    "space.fixed": {"heads": 2, "head_width": 16, "batch_size": 16},
    # Li et al. (2026): 13 MFCC + deltas + delta-deltas, 25 ms windows at a 10 ms hop, 2 s segments.
    "features": macnn.FEATURES.model_dump(mode="json"),
}
HMOE = {
    "space.family": "hmoe-simba",
    "space.params": {"router": {"type": "categorical", "choices": [True, False]}},
    "space.fixed": {
        "expert_dim": 16, "lstm_layers": 1, "cnn_layers": 1, "cnn_kernel": 3, "transformer_heads": 2,
        "transformer_layers": 1, "router_hidden": 8, "einfft_dim": 16, "d_state": 8, "batch_size": 16,
    },
    # Wang & Duan (2025): 40 MFCC + deltas + delta-deltas, 128 mel bands, 12 chroma per 10 ms frame.
    "features": {"frontends": [{"kind": "mfcc", "n_mfcc": 40, "deltas": 2}, {"kind": "logmel", "n_mels": 128},
                               {"kind": "chroma"}], "layout": "frames", "duration_s": 2.0, "n_fft": 400,
                 "hop_length": 160, "pool_to": None},
}  # fmt: skip


def _spec(corpus_root, family: dict):
    corpus = CorpusSpec(name="ravdess", root=corpus_root, classes=tuple(CLASSES.values()))
    features = {f"features.{key}": value for key, value in family.get("features", {}).items()}
    overrides = TINY_BUDGET | {k: v for k, v in family.items() if k != "features"} | features
    return spec_from_preset("bigru-mfcc-demo", corpus, overrides, folds=FoldSpec(n_folds=4, only=(0,)), device="cpu")


@pytest.mark.parametrize("family", [MACNN, HMOE], ids=["macnn-icasa", "hmoe-simba"])
def test_tpe_asha_searches_the_family_and_retrains_its_best(family, small_corpus, feature_cache, tmp_path):
    reporter = InMemoryReporter()
    result = run_search(_spec(small_corpus, family), tmp_path / "run", cache_dir=feature_cache, reporter=reporter)
    searched = [t for t in reporter.trials.values() if t.stage == "search"]
    assert len(searched) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in searched)
    assert result.folds[0].genome.family == family["space.family"]
    assert 0 <= result.folds[0].metrics["ua"] <= 1 and result.folds[0].metrics["params"] > 0
    # scored per utterance, whether or not the family reads segments: one row per test speaker's utterance
    fold = result.folds[0]
    predictions = np.load(fold.weights.parent / PREDICTIONS)
    tested = [u for u in read_corpus("ravdess", small_corpus).utterances if u.speaker in fold.test_speakers]
    expected = [str(u.path) for u in tested if u.label in CLASSES.values()]
    assert sorted(predictions["test_keys"].tolist()) == sorted(expected)
    assert predictions["test_probabilities"].shape == (len(expected), len(CLASSES))


def test_a_family_on_features_it_cannot_read_is_refused_naming_it(small_corpus):
    with pytest.raises(ConfigError, match=r"cnn2d-lstm reads \(F, T\) maps; set features\.layout"):
        _spec(small_corpus, {"space.family": "cnn2d-lstm", "space.params": None})  # the preset's MFCC frames
    corpus = CorpusSpec(name="ravdess", root=small_corpus)
    with pytest.raises(ConfigError, match=r"hmoe-simba reads \(T, D\) frame sequences"):
        spec_from_preset(
            "cnn-families-demo",
            corpus,
            {"space.families": ["cnn2d-lstm", "hmoe-simba"], "space.params": {}, "space.fixed": {}},
        )
