"""Per-feature standard scaling (zero mean, unit variance per feature row).

MFCC, log-mel and chroma rows live on very different scales (cepstral coefficients in
the hundreds, dB down to -80, chroma in [0, 1]); scaling each row helped both accuracy
and training speed in the reference work.

Fit on the training speakers' rows only and apply the result to validation and test
rows: statistics that include test speakers leak their voices into training and inflate
speaker-independent scores. Callers therefore pass only the training rows to fit_scaler.
"""

from __future__ import annotations

import numpy as np

# Floor for the standard deviation: a constant row (e.g. a chroma bin that never fires)
# would otherwise divide by zero.
MIN_STD = 1e-5


def fit_scaler(x: np.ndarray, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each feature of `x`: rows F of maps (N, C, F, T), over examples, channels and
    frames; or the last axis D of frame sequences (N, T, D) with their `lengths`, over real frames only
    (padding would drag the mean towards zero).

    `x` must hold training-speaker rows only. Both results are float32 of shape (F,) or (D,);
    statistics are accumulated in float64 so long corpora do not lose precision.
    """
    if x.shape[0] == 0:
        raise ValueError("cannot fit a scaler on 0 examples; pass the training rows")
    if lengths is not None:
        _check(x, 3)
        real = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, T) True on real frames
        frames = x[real]  # (sum of lengths, D)
        mean, std = frames.mean(axis=0, dtype=np.float64), frames.std(axis=0, dtype=np.float64)
    else:
        _check(x, 4)
        mean, std = x.mean(axis=(0, 1, 3), dtype=np.float64), x.std(axis=(0, 1, 3), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, MIN_STD).astype(np.float32)


def apply_scaler(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`x` (N, C, F, T) standardised row by row with statistics from fit_scaler; returns float32.

    (Frame sequences are scaled inside the model, `nas.models.SerModel`, which masks their padding.)"""
    _check(x, 4)
    n_features = x.shape[2]
    if mean.shape != (n_features,) or std.shape != (n_features,):
        raise ValueError(
            f"scaler statistics have shapes {mean.shape} and {std.shape} but x has {n_features} "
            "feature rows; fit and apply with the same FeatureSpec"
        )
    return ((x - mean[:, None]) / std[:, None]).astype(np.float32, copy=False)


def _check(x: np.ndarray, ndim: int) -> None:
    if x.ndim != ndim:
        layout = "(N, C, F, T)" if ndim == 4 else "(N, T, D)"
        raise ValueError(f"expected features of shape {layout}, got {x.shape}")
