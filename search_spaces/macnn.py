"""MACNN with ICASA attention (Li et al., 2026, "Speech Emotion Recognition Based on the Adaptive Acoustic
Enhancement and Refined Attention Mechanism"), the network of their AAM-ICASA-MACNN.

The backbone is MACNN (Xu et al., 2021, "Speech Emotion Recognition with Multiscale Area Attention and Data
Augmentation", ICASSP): on a (1, 39, 200) map of 13 MFCC + deltas + delta-deltas over a 2 s segment, two
parallel first convs, (10, 2) and (2, 8) kernels of 8 channels each, concatenated to 16; then 3x3 convs
16 -> 32 -> 48 -> 64 -> 80, each with batch norm and ReLU, a 2x2 max pool after Conv2 and Conv3; then a
4-head attention fused by a linear map and a weighted average, with a residual connection and layer norm;
then one fully connected layer. Li et al. interleave ICASA modules with the convs:

    ICASA(x) = beta * ICA(x) + (1 - beta) * SA(x),  beta learnable, 0.5 at the start

ICA is coordinate attention (Hou et al., 2021) with a depthwise-separable conv and h-swish (reduction
ratio 32); SA is shuffle attention (Zhang & Yang, 2021) with G = 4 groups. `attention` selects Li et al.'s
ablations (Table 10): ICA alone, SA alone, none. Trained with Adam at 1e-3, weight decay 1e-6, batch 32,
60 epochs. Their adaptive acoustic mixup and 2 s segmentation are training- and data-side (`TrainRecipe.mixup`,
`FeatureSpec.segments`), not here; `FEATURES` is their input with that segmentation.

Torch-free: the network is built by `nas.models.macnn`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.features.spec import FeatureSpec, Mfcc, Segments
from nas.recipe import TrainRecipe
from search_spaces.distributions import CategoricalDistribution, Distribution, FloatDistribution

POOLED_CONVS = (2, 3)
"""The convs (numbered as in Li et al.'s Table 1: Conv2 is the first 3x3 conv) followed by a 2x2 max pool."""


class MacnnArchitecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["macnn-icasa"] = "macnn-icasa"
    channels: tuple[int, ...] = Field(
        (16, 32, 48, 64, 80),
        min_length=3,
        description="channels[0]: the two first convs concatenated (half each); channels[i]: output of Conv(i + 1), "
        "the 3x3 convs Conv2, Conv3, ...",
    )
    attention: Literal["icasa", "ica", "sa", "none"] = Field(
        "icasa", description="the module after the convs in attention_after; ica, sa, none: Li et al.'s ablations"
    )
    attention_after: tuple[int, ...] = Field(
        (2, 3, 4, 5),
        min_length=1,
        description="the 3x3 convs (Conv2 = 2, ...) whose block output (after its pool, if any) goes through the "
        "attention module; ignored when attention is none",
    )
    sa_groups: int = Field(4, ge=1, description="shuffle attention's G; 2G must divide those convs' channels")
    ica_reduction: int = Field(32, ge=1, description="coordinate attention's reduction ratio r")
    heads: int = Field(4, ge=1, description="heads of the attention after the last conv")
    head_width: int = Field(64, ge=1, description="channels of each head's query, key and value")
    dropout: float = Field(0.0, ge=0, lt=1, description="before the fully connected layer; Li et al. name none")

    @model_validator(mode="after")
    def _consistent(self) -> MacnnArchitecture:
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must all be positive, got {self.channels}")
        if self.channels[0] % 2:
            raise ValueError(
                f"channels[0] {self.channels[0]} must be even: the two parallel first convs get half of it each"
            )
        last_conv = len(self.channels)  # channels (16, 32, 48, 64, 80) make Conv2 .. Conv5
        if list(self.attention_after) != sorted(set(self.attention_after)):
            raise ValueError(f"attention_after {self.attention_after} must be strictly increasing conv numbers")
        if not all(2 <= k <= last_conv for k in self.attention_after):
            raise ValueError(
                f"attention_after {self.attention_after} names convs outside Conv2..Conv{last_conv} "
                f"(the 3x3 convs of channels {self.channels})"
            )
        if self.attention in ("icasa", "sa"):
            for k in self.attention_after:
                width = self.channels[k - 1]
                if width % (2 * self.sa_groups):
                    raise ValueError(
                        f"shuffle attention after Conv{k} splits its {width} channels into {self.sa_groups} groups "
                        f"of two halves: 2 * sa_groups = {2 * self.sa_groups} must divide {width}"
                    )
        return self


SPACE: dict[str, Distribution] = {
    "attention": CategoricalDistribution(choices=("icasa", "ica", "sa", "none")),
    "heads": CategoricalDistribution(choices=(1, 2, 4, 8)),
    "head_width": CategoricalDistribution(choices=(32, 64, 128)),
    "dropout": FloatDistribution(low=0.0, high=0.5, step=0.1),
    "lr": CategoricalDistribution(choices=(1e-3, 5e-4, 1e-4)),
}

# Li et al. (2026), 3.2: Adam at 1e-3 with weight decay 1e-6, batch 32, 60 epochs; no schedule, clipping or
# early stopping is named. Precise BN is ours: on the bundled RAVDESS actors the weights still move so fast under
# Adam at 1e-3 that the running BatchNorm averages lag them, and the evaluated network scored its own training
# windows at chance (0.13) while the same weights with fresh statistics scored 0.88 (benchmarks/README.md).
RECIPE = TrainRecipe(
    optimizer="adam",
    lr=1e-3,
    weight_decay=1e-6,
    batch_size=32,
    epochs=60,
    schedule="constant",
    grad_clip=None,
    precise_bn=True,
)

# Li et al. (2026), 3.1: 13 MFCCs from 26 mel filters + deltas + delta-deltas, 25 ms Hamming windows at a 10 ms
# hop, cut into 2 s segments every 1 s for training and every 0.4 s for testing. RAVDESS utterances last 3-5 s;
# 6 s keeps them whole.
FEATURES = FeatureSpec(
    frontends=(Mfcc(n_mfcc=13, deltas=2, n_mels=26),),
    layout="frames",
    pool_to=None,
    duration_s=6.0,
    n_fft=400,
    window="hamming",
    hop_length=160,
    segments=Segments(frames=200, train_stride=100, test_stride=40),
)
