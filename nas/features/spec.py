"""FeatureSpec: what an utterance is turned into before it reaches a network.

Typed and JSON-round-trippable: it travels inside search specs and genomes, and its
canonical JSON is part of the feature-cache key.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frontend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Every MFCC frontend that names no mel bands sees at least this many, as librosa's own default does.
MIN_MFCC_MELS = 128


class Mfcc(_Frontend):
    kind: Literal["mfcc"] = "mfcc"
    n_mfcc: int = Field(128, ge=1, le=256)
    deltas: Literal[0, 1, 2] = Field(0, description="0: MFCC only; 1: + delta; 2: + delta and delta-delta")
    n_mels: int | None = Field(
        None, ge=1, le=512, description=f"mel bands the MFCCs are taken from; default max({MIN_MFCC_MELS}, n_mfcc)"
    )

    @model_validator(mode="after")
    def _enough_mels(self) -> Mfcc:
        if self.n_mels is not None and self.n_mels < self.n_mfcc:
            raise ValueError(f"n_mels {self.n_mels} gives at most {self.n_mels} MFCCs, fewer than n_mfcc {self.n_mfcc}")
        return self

    @property
    def n_features(self) -> int:
        return self.n_mfcc * (1 + self.deltas)

    @property
    def mel_bands(self) -> int:
        return self.n_mels or max(MIN_MFCC_MELS, self.n_mfcc)


class LogMel(_Frontend):
    kind: Literal["logmel"] = "logmel"
    n_mels: int = Field(128, ge=1, le=512)

    @property
    def n_features(self) -> int:
        return self.n_mels


class Chroma(_Frontend):
    kind: Literal["chroma"] = "chroma"
    n_chroma: int = Field(12, ge=1, le=48)

    @property
    def n_features(self) -> int:
        return self.n_chroma


class Ssl(_Frontend):
    """Frames of a frozen self-supervised speech model (DistilHuBERT: Chang et al., 2022), 50 per second.

    The weights are a transformers `HubertModel` saved with `save_pretrained` in a local directory
    (`model_dir`, else $SERNAS_SSL_DIR/<model>); nothing is ever downloaded at run time.
    """

    kind: Literal["ssl"] = "ssl"
    model: Literal["distilhubert"] = "distilhubert"
    model_dir: Path | None = Field(None, description="local HubertModel directory; default $SERNAS_SSL_DIR/<model>")
    layer: int | None = Field(None, ge=0, description="hidden state to use (0: before the encoder); None: the last")
    dim: int = Field(768, ge=1, description="frame width the model yields (checked when it loads)")

    @property
    def n_features(self) -> int:
        return self.dim


class Segments(BaseModel):
    """Fixed-length windows of a frame sequence, the segment protocol of MACNN (Xu et al., 2021) and
    AAM-ICASA-MACNN (Li et al., 2026): a network trains on windows cut every `train_stride` frames from the
    training utterances, each labelled with its utterance's label, and scores an utterance by the mean of its
    windows' class probabilities, cut every `test_stride` frames. Windows start at 0, `stride`, ... while they
    fit; when the last one stops short of the end, one more window ends at the last frame, so no frame is left
    out; an utterance shorter than a window is one window, zero-padded (zero: the training mean, after scaling).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(200, ge=1, description="frames per window; 200 at a 10 ms hop is Li et al.'s 2 s")
    train_stride: int = Field(100, ge=1, description="frames between training windows; Li et al.: 1 s")
    test_stride: int = Field(40, ge=1, description="frames between the windows an utterance is scored on; 0.4 s")


Frontend = Annotated[Mfcc | LogMel | Chroma | Ssl, Field(discriminator="kind")]

# Frame rate of HuBERT-style models on 16 kHz audio: a 320-sample hop of their convolutional encoder.
SSL_HOP = 320


class FeatureSpec(BaseModel):
    """Frontends are stacked along the feature axis, in one of two layouts.

    - `map`: one (1, F, T) image per utterance (audio zero-padded or cut to `duration_s`), for CNNs.
      Defaults are emoDARTS's: 128 MFCCs of 16 kHz audio padded or cut to 8 s, the 128 x 513
      matrix max-pooled down to 128 x 128.
    - `frames`: a (T, D) sequence per utterance with its true length: audio is cut to `duration_s`
      but not padded, and frames are zero-padded to `max_frames` only when batched; models mask
      the padding. SSL frames (DistilHuBERT) exist only in this layout.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frontends: tuple[Frontend, ...] = (Mfcc(),)
    sample_rate: int = Field(16000, ge=4000, le=96000, description="audio is resampled to this rate")
    duration_s: float = Field(8.0, gt=0, le=60, description="zero-pad or truncate every utterance to this")
    n_fft: int = Field(1024, ge=64)
    window: Literal["hann", "hamming"] = Field("hann", description="the STFT's analysis window")
    hop_length: int = Field(250, ge=16)
    pool_to: tuple[int, int] | None = Field(
        (128, 128), description="max-pool the (F, T) map down to this size; None keeps it"
    )
    scaling: Literal["standard", "none"] = Field(
        "standard", description="per-feature standard scaling fitted on training speakers only"
    )
    layout: Literal["map", "frames"] = Field("map", description="map: (1, F, T) images; frames: (T, D) sequences")
    max_frames: int | None = Field(
        None, ge=1, description="frames layout: pad or cut every sequence to this; default: the frames of duration_s"
    )
    segments: Segments | None = Field(
        None, description="frames layout: networks read fixed-length windows and score an utterance by their mean"
    )

    @model_validator(mode="before")
    @classmethod
    def _frames_are_not_pooled(cls, data: object) -> object:
        """`pool_to`'s default is the map layout's; a frames spec that does not name it gets none."""
        if isinstance(data, dict) and data.get("layout") == "frames" and "pool_to" not in data:
            return {**data, "pool_to": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if not self.frontends:
            raise ValueError("frontends: give at least one of mfcc, logmel, chroma, ssl")
        ssl = [f for f in self.frontends if isinstance(f, Ssl)]
        if ssl and (len(self.frontends) > 1 or self.layout != "frames"):
            raise ValueError(
                "an ssl frontend stands alone and yields frame sequences: use frontends [ssl] with layout 'frames'"
            )
        if ssl and self.sample_rate != 16000:
            raise ValueError(f"{ssl[0].model} reads 16 kHz audio: set sample_rate 16000, not {self.sample_rate}")
        if self.layout == "frames" and self.pool_to is not None:
            raise ValueError("pool_to applies to the map layout only: set pool_to null for layout 'frames'")
        if self.layout == "map" and self.max_frames is not None:
            raise ValueError("max_frames applies to the frames layout only: set max_frames null for layout 'map'")
        if self.layout == "map" and self.segments is not None:
            raise ValueError("segments apply to the frames layout only: set segments null or layout 'frames'")
        if self.pool_to is not None:
            f, t = self.raw_shape
            if self.pool_to[0] > f or self.pool_to[1] > t:
                raise ValueError(
                    f"pool_to {self.pool_to} is larger than the unpooled map {(f, t)}; "
                    "lower pool_to or raise duration_s / the number of coefficients"
                )
        return self

    @property
    def n_samples(self) -> int:
        return round(self.duration_s * self.sample_rate)

    @property
    def ssl(self) -> Ssl | None:
        """The SSL frontend, when the features are a frozen model's frames."""
        first = self.frontends[0]
        return first if isinstance(first, Ssl) else None

    @property
    def n_features(self) -> int:
        return sum(f.n_features for f in self.frontends)

    @property
    def raw_shape(self) -> tuple[int, int]:
        """(F, T) of `duration_s` of audio before pooling; librosa centres frames, hence the + 1."""
        if self.ssl is not None:
            return self.n_features, (self.n_samples - 400) // SSL_HOP + 1  # 400: the encoder's receptive field
        return self.n_features, self.n_samples // self.hop_length + 1

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One example as a model reads it: (channels, F, T) for a map, (T, D) for frames (padded)."""
        if self.layout == "frames":
            return self.max_frames or self.raw_shape[1], self.n_features
        f, t = self.pool_to or self.raw_shape
        return 1, f, t

    @property
    def network_shape(self) -> tuple[int, ...]:
        """One example as the network inside a model reads it: one window (frames, D) when segmented, else
        `output_shape`."""
        if self.segments is not None:
            return self.segments.frames, self.n_features
        return self.output_shape

    @property
    def scaled_features(self) -> int:
        """Features the per-feature scaler standardises: the map's rows as a model reads them (after
        pooling), or the frames' width."""
        shape = self.output_shape
        return shape[-1] if self.layout == "frames" else shape[1]

    def cache_key(self) -> str:
        """Names the cached features: everything that changes them (scaling happens later, per fold;
        frame sequences are cached unpadded, so `max_frames` and `segments` are applied on reading), and
        librosa's version, so an upgrade never reuses features computed by an older one."""
        extraction = self.model_dump_json(exclude={"scaling", "max_frames", "segments"})
        return hashlib.sha256(f"{extraction} librosa {version('librosa')}".encode()).hexdigest()[:16]
