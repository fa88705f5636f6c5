"""Waveform augmentation (nas.augment.waveform) and its augmented training rows, on real RAVDESS audio."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from nas.augment.waveform import AudioAugment, augment_signal
from nas.data.types import Utterance
from nas.dataset import featurise
from nas.features.audio import load_audio
from nas.features.spec import FeatureSpec
from nas.reporting import InMemoryReporter
from nas.spec import SEARCH_SPEC, CorpusSpec

RATE = 16_000


@pytest.fixture(scope="module")
def speech(ravdess_root: Path) -> np.ndarray:
    return load_audio(sorted((ravdess_root / "Actor_01").glob("*.flac"))[0], RATE)


def test_a_copy_is_the_same_under_its_seed_and_differs_across_seeds(speech: np.ndarray) -> None:
    settings = AudioAugment()
    first = augment_signal(speech, RATE, settings, seed=7)
    assert first.dtype == np.float32
    assert np.array_equal(first, augment_signal(speech, RATE, settings, seed=7))
    others = [augment_signal(speech, RATE, settings, seed=s) for s in (8, 9)]
    assert all(len(o) != len(first) or not np.array_equal(o, first) for o in others)


def test_augmenting_leaves_the_global_random_states_alone(speech: np.ndarray) -> None:
    random.seed(1)
    np.random.seed(2)
    saved_random, saved_numpy = random.getstate(), np.random.get_state()
    augment_signal(speech, RATE, AudioAugment(), seed=3)
    assert random.getstate() == saved_random
    after = np.random.get_state()
    assert np.array_equal(after[1], saved_numpy[1]) and after[2:] == saved_numpy[2:]


def test_noise_alone_lands_within_its_snr_range(speech: np.ndarray) -> None:
    settings = AudioAugment(transforms=("noise",), noise_snr_db=(10, 25))
    for seed in range(5):
        noise = augment_signal(speech, RATE, settings, seed) - speech
        snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert 9.8 <= snr <= 25.2


def test_time_stretch_changes_the_length_unless_asked_to_keep_it(speech: np.ndarray) -> None:
    slower = AudioAugment(transforms=("time_stretch",), time_stretch=(0.8, 0.9))
    assert len(augment_signal(speech, RATE, slower, seed=0)) > len(speech) * 1.05
    kept = slower.model_copy(update={"keep_length": True})
    assert len(augment_signal(speech, RATE, kept, seed=0)) == len(speech)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"time_stretch": (1.2, 0.8)}, "low <= high"),
        ({"noise_snr_db": (25, 10)}, "low <= high"),
        ({"time_stretch": (0.05, 1.2)}, r"\[0.1, 10\]"),
        ({"pitch_semitones": (-30, 2)}, r"\[-24, 24\]"),
        ({"transforms": ()}, "at least one"),
        ({"transforms": ("noise", "noise")}, "once"),
        ({"transforms": ("reverb",)}, "time_stretch"),
        ({"copies": 0}, "greater than or equal to 1"),
        ({"copy": 1}, "Extra inputs"),
    ],
)
def test_settings_refuse_bad_values(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AudioAugment.model_validate(settings)


def test_an_ensemble_refuses_to_augment() -> None:
    ensemble = {"strategy": "genetic-ensemble", "corpus": {"name": "ravdess", "root": "/data"}}
    ensemble |= {"space": {"searches": ["earlier"]}}
    SEARCH_SPEC.validate_python(ensemble)
    with pytest.raises(ValidationError, match="augment: an ensemble trains nothing"):
        SEARCH_SPEC.validate_python(ensemble | {"augment": {}})


@pytest.mark.parametrize("layout", ["map", "frames"])
def test_featurise_adds_cached_copies_for_training_rows_only(ravdess_root: Path, tmp_path: Path, layout: str) -> None:
    # 10 per class over 2 speakers: the least `featurise` accepts.
    paths = [path for actor in ("Actor_01", "Actor_02") for path in sorted((ravdess_root / actor).glob("*.flac"))[:10]]
    utterances = [Utterance(path=p, label=("calm", "angry")[i % 2], speaker=p.parent.name) for i, p in enumerate(paths)]
    spec = FeatureSpec(layout=layout, duration_s=2.0)
    corpus = CorpusSpec(name="ravdess", root=ravdess_root)
    augment = AudioAugment(copies=2)

    def prepare():
        return featurise(utterances, [], corpus, spec, InMemoryReporter(), tmp_path, False, augment=augment, seed=5)

    data = prepare()
    assert len(data.augmented) == 2
    assert all(copy.shape == data.x.shape for copy in data.augmented)
    assert not np.array_equal(data.augmented[0], data.augmented[1])
    assert not any(np.array_equal(copy, data.x) for copy in data.augmented)
    # One cache folder per copy, one entry per file in each, beside the originals'.
    copy_dirs = sorted(tmp_path.glob("*/augment-*"))
    assert [d.name[-5:] for d in copy_dirs] == ["copy0", "copy1"]
    assert all(len(list(d.rglob("*.npy"))) == len(paths) for d in copy_dirs)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    again = prepare()  # read back from the cache: no entry is rewritten
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")} == stamps
    assert all(np.array_equal(a, b) for a, b in zip(again.augmented, data.augmented, strict=True))

    index = np.array([0, 2, 3])
    training, scored = data.training_rows(index), data.rows(index)
    assert len(training) == 3 * len(index) and len(scored) == len(index)
    assert np.array_equal(training.y, np.tile(data.y[index], 3))
    assert np.array_equal(training.x[: len(index)], scored.x)
    assert np.array_equal(training.x[len(index) :][: len(index)], data.augmented[0][index])
    if layout == "frames":
        assert len(training.lengths) == len(training)
        assert np.array_equal(training.lengths[len(index) :][: len(index)], data.augmented_lengths[0][index])
