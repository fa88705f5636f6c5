"""How a trained model holds up under noise: its test scores with additive white Gaussian noise (AWGN).

Li et al. (2026) report UA under AWGN at 20, 10 and 0 dB SNR. The noise is added to each test utterance's
waveform before its features are computed, exactly as a noisy recording would reach the model; it is drawn
from a generator seeded per utterance and SNR, so the figures repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.features.audio import load_audio
from nas.features.extract import place, signal_features
from nas.features.spec import FeatureSpec
from nas.metrics import classification_report

NOISE_KEYS = ("ua", "wa", "macro_f1")


def white_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`signal` plus white Gaussian noise whose power is the signal's mean power / 10^(snr_db / 10)."""
    power = float(np.mean(np.square(signal, dtype=np.float64)))
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), size=signal.shape)
    return (signal + noise).astype(np.float32)


def scores_under_noise(
    model: Any,
    spec: FeatureSpec,
    paths: Sequence[Path],
    labels: np.ndarray,
    classes: Sequence[str],
    snrs_db: Sequence[float],
    seed: int,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Per SNR (its text, e.g. "10"), the ua / wa / macro_f1 of the model on the files made noisy."""
    from nas.train import predict_proba

    signals = [load_audio(path, spec.sample_rate) for path in paths]
    scores = {}
    for snr in snrs_db:
        x = np.zeros((len(paths), *spec.output_shape), dtype=np.float32)
        lengths = np.zeros(len(paths), dtype=np.int64)
        for i, signal in enumerate(signals):
            rng = np.random.default_rng([seed, i, round(snr * 1000) & 0xFFFFFFFF])
            lengths[i] = place(x, i, signal_features(white_noise(signal, snr, rng), spec))
        probabilities = predict_proba(model, x, lengths if spec.layout == "frames" else None, device=device)
        report = classification_report(labels, probabilities, classes)
        scores[f"{snr:g}"] = {key: report[key] for key in NOISE_KEYS}
    return scores
