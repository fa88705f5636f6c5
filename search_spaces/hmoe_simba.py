"""HMoE-SiMBA (Wang & Duan, 2025, "HMoE-SiMBA: Heterogeneous Mixture-of-Experts with SiMBA Attention for
Robust Chinese Speech Emotion Recognition", ICIC): a mixture of heterogeneous experts, then SiMBA.

The input is a frame sequence of 40 MFCCs with their deltas and delta-deltas, 128 log-mel bands and
12 chroma bins (260 per frame; any width works). Three experts read it in parallel, each projecting
to `expert_dim` per frame: an LSTM, a 1D CNN over time and a transformer encoder. A router (an MLP
with two ReLU hidden layers and a softmax over the experts) weighs them per utterance from the mean
input frame, the paper's F_in; their weighted sum goes through SiMBA (Patro & Agneeswaran, 2024): a
projection to `einfft_dim` channels (the paper's D_selected), EinFFT (channel mixing in the frequency
domain) and a Mamba block (Gu & Dao, 2023) with state size `d_state`. The mean over the valid frames
is classified. `router=False` and `simba=False` are the paper's two architectural ablations (without
the router the experts are averaged; without SiMBA the mixture is pooled directly).

The paper averages the features over time before the experts (its F_in, 260 values per utterance),
which would leave its sequence experts and Mamba a sequence of one; here the experts, EinFFT and
Mamba read the frame sequence, and the router reads that average. The defaults are the paper's best:
D_selected 128 and D_state 256, from its sensitivity sweeps over 32..256 and 64..512. The paper gives
no expert sizes; those defaults are ours.

This module is torch-free: the network is built by `nas.models.hmoe_simba`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.features.spec import Chroma, FeatureSpec, LogMel, Mfcc
from nas.recipe import TrainRecipe
from search_spaces.distributions import CategoricalDistribution, Distribution, FloatDistribution, IntDistribution


class HmoeSimbaArchitecture(BaseModel):
    """LSTM, CNN and transformer experts, routed per utterance, then EinFFT and Mamba (Wang & Duan, 2025)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["hmoe-simba"] = "hmoe-simba"
    expert_dim: int = Field(128, ge=1, description="per-frame output width of every expert")
    lstm_layers: int = Field(2, ge=1, le=4, description="stacked unidirectional LSTM layers of the LSTM expert")
    cnn_layers: int = Field(2, ge=1, le=4, description="conv -> ReLU layers of the CNN expert, over time")
    cnn_kernel: int = Field(5, ge=1, le=15, description="temporal kernel of the CNN expert; odd, to keep T frames")
    transformer_heads: int = Field(4, ge=1, description="attention heads of the transformer expert")
    transformer_layers: int = Field(2, ge=1, le=6, description="encoder layers of the transformer expert")
    router_hidden: int = Field(64, ge=1, description="width of both hidden layers of the router MLP")
    router: bool = Field(True, description="False: the paper's ablation without the router; experts are averaged")
    simba: bool = Field(True, description="False: the paper's ablation without SiMBA; the mixture is pooled")
    einfft_dim: int = Field(128, ge=1, description="channels SiMBA selects and mixes (the paper's D_selected)")
    einfft_blocks: int = Field(4, ge=1, description="blocks of EinFFT's block-diagonal channel mixing (SiMBA: 4)")
    d_state: int = Field(256, ge=1, description="state size of the Mamba block (the paper's D_state)")
    dropout: float = Field(0.1, ge=0, lt=1, description="inside the experts and before the classifier")

    @model_validator(mode="after")
    def _shapes_fit(self) -> HmoeSimbaArchitecture:
        if self.expert_dim % self.transformer_heads:
            raise ValueError(
                f"transformer_heads {self.transformer_heads} must divide expert_dim {self.expert_dim}, "
                "the transformer expert's width"
            )
        if self.cnn_kernel % 2 == 0:
            raise ValueError(
                f"cnn_kernel {self.cnn_kernel} must be odd: the CNN expert pads (kernel - 1) / 2 frames on "
                "each side to keep every frame"
            )
        if self.einfft_dim % self.einfft_blocks:
            raise ValueError(
                f"einfft_blocks {self.einfft_blocks} must divide einfft_dim {self.einfft_dim}: EinFFT mixes "
                "equal blocks of channels"
            )
        return self


# D_selected and D_state take the values of the paper's sensitivity sweeps; the ablation switches
# `router` and `simba` stay fixed (the paper found both help) but can be set per configuration.
SPACE: dict[str, Distribution] = {
    "expert_dim": CategoricalDistribution(choices=(64, 128, 256)),
    "lstm_layers": IntDistribution(low=1, high=2),
    "cnn_layers": IntDistribution(low=1, high=3),
    "cnn_kernel": CategoricalDistribution(choices=(3, 5, 7)),
    "transformer_heads": CategoricalDistribution(choices=(2, 4, 8)),
    "transformer_layers": IntDistribution(low=1, high=2),
    "router_hidden": CategoricalDistribution(choices=(32, 64, 128)),
    "einfft_dim": CategoricalDistribution(choices=(32, 64, 128, 256)),
    "d_state": CategoricalDistribution(choices=(64, 128, 256, 512)),
    "dropout": FloatDistribution(low=0.0, high=0.5, step=0.1),
    "lr": CategoricalDistribution(choices=(3e-4, 1e-4, 3e-5)),
}

# As published: AdamW at 1e-4, batch 32, weight decay 1e-5, the rate times 0.9 every 10 epochs, 100
# epochs, the epoch with the best validation accuracy kept; no gradient clipping is mentioned.
RECIPE = TrainRecipe(
    epochs=100,
    batch_size=32,
    optimizer="adamw",
    lr=1e-4,
    weight_decay=1e-5,
    schedule="step",
    step_size=10,
    gamma=0.9,
    grad_clip=None,
    monitor="val_ua",
)

# Wang & Duan (2025): 40 MFCCs + deltas + delta-deltas, 128 log-mel bands and 12 chroma bins per frame
# (260 values); 25 ms frames at a 10 ms hop, whole utterances (RAVDESS' last 3-5 s; 6 s keeps them whole).
FEATURES = FeatureSpec(
    frontends=(Mfcc(n_mfcc=40, deltas=2), LogMel(n_mels=128), Chroma(n_chroma=12)),
    layout="frames",
    pool_to=None,
    duration_s=6.0,
    n_fft=400,
    hop_length=160,
)
