"""Waveform augmentation of training utterances with audiomentations (Jordal et al.).

Li et al. (2026) enlarge the training set with time stretch (rate U(0.8, 1.2)), pitch shift (-2..+2
semitones) and additive white Gaussian noise (SNR U(10, 25) dB). Each augmented copy of an utterance
gets a random non-empty subset of these transforms (`SomeOf((1, None))`): with an independent
probability per transform some copies would get none and merely duplicate the original.

Copies are computed once, offline, through the cached, parallel feature extraction
(`nas.features.extract.extract_augmented`), so training epochs never wait on per-sample DSP.
This module is torch-free, and audiomentations (which pulls numba and scipy) is imported only
when a signal is actually augmented, so specs can be validated without it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Transform = Literal["time_stretch", "pitch_shift", "noise"]


class AudioAugment(BaseModel):
    """Offline waveform augmentation of training rows (never validation or test rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    copies: int = Field(2, ge=1, description="augmented copies of each training utterance, besides the original")
    time_stretch: tuple[float, float] = Field((0.8, 1.2), description="time-stretch rate range (>1 speeds up)")
    pitch_semitones: tuple[float, float] = Field((-2.0, 2.0), description="pitch-shift range in semitones")
    noise_snr_db: tuple[float, float] = Field((10.0, 25.0), description="white Gaussian noise SNR range in dB")
    transforms: tuple[Transform, ...] = Field(
        ("time_stretch", "pitch_shift", "noise"),
        description="the transforms to draw from; each copy applies a random non-empty subset of them",
    )
    keep_length: bool = Field(
        False,
        description="crop or zero-pad a time-stretched signal to its original length; off by default so a "
        "slower or faster utterance keeps all its speech (feature extraction fits the duration anyway)",
    )

    @field_validator("time_stretch", "pitch_semitones", "noise_snr_db")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[0] > bounds[1]:
            raise ValueError(f"a range is (low, high) with low <= high, got {list(bounds)}")
        return bounds

    @field_validator("time_stretch")
    @classmethod
    def _stretch_range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        # audiomentations' TimeStretch accepts rates in [0.1, 10].
        if bounds[0] < 0.1 or bounds[1] > 10:
            raise ValueError(f"time_stretch rates must lie in [0.1, 10], got {list(bounds)}")
        return bounds

    @field_validator("pitch_semitones")
    @classmethod
    def _pitch_range(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        # audiomentations' PitchShift accepts at most two octaves either way.
        if bounds[0] < -24 or bounds[1] > 24:
            raise ValueError(f"pitch_semitones must lie in [-24, 24], got {list(bounds)}")
        return bounds

    @model_validator(mode="after")
    def _some_transforms(self) -> AudioAugment:
        if not self.transforms:
            raise ValueError("transforms: name at least one of time_stretch, pitch_shift, noise")
        if len(set(self.transforms)) < len(self.transforms):
            raise ValueError(f"transforms: each may appear once, got {list(self.transforms)}")
        return self

    def cache_key(self) -> str:
        """Names one copy's cached features along with the seed and copy index: every setting that changes a
        copy (not `copies`, so asking for more copies reuses the first ones) and audiomentations' version."""
        settings = self.model_dump_json(exclude={"copies"})
        return hashlib.sha256(f"{settings} audiomentations {version('audiomentations')}".encode()).hexdigest()[:16]


def copy_seed(seed: int, digest: str, copy: int) -> int:
    """The seed of one augmented copy: the search's seed, the file's content digest and the copy index, so a
    copy is the same whichever process computes it and in whatever order."""
    return int.from_bytes(hashlib.sha256(f"{seed} {digest} {copy}".encode()).digest()[:4], "little")


def augment_signal(signal: np.ndarray, sample_rate: int, settings: AudioAugment, seed: int) -> np.ndarray:
    """One augmented copy of a mono float32 signal, the same for the same seed.

    Time stretch and pitch shift use Signalsmith Stretch (audiomentations' default backend, via the
    python-stretch wheel, which needs no system library and is faster than librosa's phase vocoder).
    """
    from audiomentations import AddGaussianSNR, PitchShift, SomeOf, TimeStretch

    chosen = {
        "time_stretch": lambda: TimeStretch(
            min_rate=settings.time_stretch[0],
            max_rate=settings.time_stretch[1],
            leave_length_unchanged=settings.keep_length,
            p=1.0,
        ),
        "pitch_shift": lambda: PitchShift(
            min_semitones=settings.pitch_semitones[0], max_semitones=settings.pitch_semitones[1], p=1.0
        ),
        "noise": lambda: AddGaussianSNR(
            min_snr_db=settings.noise_snr_db[0], max_snr_db=settings.noise_snr_db[1], p=1.0
        ),
    }
    pipeline = SomeOf((1, None), [chosen[name]() for name in settings.transforms])
    with _seeded(seed):
        augmented = pipeline(samples=np.asarray(signal, dtype=np.float32), sample_rate=sample_rate)
    return np.ascontiguousarray(augmented, dtype=np.float32)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global `random` and `numpy.random` states audiomentations draws from, and restore both after,
    so no one else's random stream moves."""
    saved_random, saved_numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(saved_random)
        np.random.set_state(saved_numpy)
