"""Standard scaling fitted on training speakers' features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.data.types import Utterance
from nas.features.extract import extract
from nas.features.scaling import MIN_STD, apply_scaler, fit_scaler
from nas.features.spec import Chroma, FeatureSpec, LogMel, Mfcc


def test_scaler_fitted_on_training_speakers_standardises_their_rows(ravdess_root: Path) -> None:
    paths = (
        sorted((ravdess_root / "Actor_01").glob("*.flac"))[:4] + sorted((ravdess_root / "Actor_02").glob("*.flac"))[:2]
    )
    utterances = [Utterance(p, "neutral", p.parent.name) for p in paths]
    # Rows on very different scales (cepstra, dB, [0, 1] chroma) are what scaling is for.
    spec = FeatureSpec(frontends=(Mfcc(n_mfcc=40), LogMel(n_mels=64), Chroma()), duration_s=4.0, pool_to=None)
    x = extract(utterances, spec, None, workers=1, progress=False).x
    train = np.array([u.speaker == "Actor_01" for u in utterances])

    mean, std = fit_scaler(x[train])
    assert mean.shape == std.shape == (spec.raw_shape[0],)
    assert mean.dtype == std.dtype == np.float32

    scaled = apply_scaler(x, mean, std)
    assert scaled.dtype == np.float32 and scaled.shape == x.shape
    np.testing.assert_allclose(scaled[train].mean(axis=(0, 1, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(scaled[train].std(axis=(0, 1, 3)), 1, atol=1e-3)
    # Held-out speakers are transformed with the training statistics, not their own.
    assert not np.allclose(scaled[~train].mean(axis=(0, 1, 3)), 0, atol=1e-2)


def test_constant_rows_are_not_divided_by_zero() -> None:
    x = np.random.default_rng(0).standard_normal((3, 1, 4, 10)).astype(np.float32)
    x[:, :, 2] = 7.0
    mean, std = fit_scaler(x)
    assert std[2] == pytest.approx(MIN_STD)
    scaled = apply_scaler(x, mean, std)
    assert np.isfinite(scaled).all()
    np.testing.assert_array_equal(scaled[:, :, 2], 0)


def test_mismatched_shapes_are_rejected() -> None:
    x = np.zeros((2, 1, 4, 5), np.float32)
    mean, std = fit_scaler(x)
    with pytest.raises(ValueError, match="FeatureSpec"):
        apply_scaler(np.zeros((2, 1, 6, 5), np.float32), mean, std)
    with pytest.raises(ValueError, match=r"\(N, C, F, T\)"):
        fit_scaler(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="0 examples"):
        fit_scaler(np.zeros((0, 1, 4, 5), np.float32))


def test_frame_sequences_are_scaled_over_their_real_frames_only() -> None:
    rng = np.random.default_rng(0)
    lengths = np.array([3, 7, 5])
    x = np.zeros((3, 7, 4), np.float32)  # (N, T, D) zero-padded
    for i, n in enumerate(lengths):
        x[i, :n] = rng.normal(10.0, 2.0, (n, 4))
    mean, std = fit_scaler(x, lengths)
    real = np.concatenate([x[i, :n] for i, n in enumerate(lengths)])  # the 15 real frames
    assert mean.shape == std.shape == (4,) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, real.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, real.std(axis=0), rtol=1e-5)
    assert (mean > 8).all()  # padding would have pulled the means towards zero
    with pytest.raises(ValueError, match=r"\(N, T, D\)"):
        fit_scaler(np.zeros((3, 1, 7, 4), np.float32), lengths)
