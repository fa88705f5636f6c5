"""CNN-Transformer (Serra, LoopQPrize 2022): four 2D conv blocks (32, 64, 128, 256 filters), then a
transformer encoder block over time.

The conv map (256, F', T') is averaged over frequency into a (T', 256) sequence, which one or more
transformer encoder blocks (self-attention + feed-forward, post-norm as in Vaswani et al., 2017) read;
the mean over time is classified. Torch-free: the network is built by `nas.models.cnn_transformer`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from search_spaces.distributions import CategoricalDistribution, Distribution, FloatDistribution, IntDistribution


class CnnTransformerArchitecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["cnn-transformer"] = "cnn-transformer"
    filters: tuple[int, ...] = Field((32, 64, 128, 256), min_length=1, description="filters of each conv block")
    kernel_size: int = Field(3, ge=1, le=9)
    heads: int = Field(4, ge=1, description="attention heads; must divide the last block's filters")
    ff_units: int = Field(256, ge=1, description="width of the encoder block's feed-forward layer")
    encoder_layers: int = Field(1, ge=1, le=6)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> CnnTransformerArchitecture:
        if self.filters[-1] % self.heads:
            raise ValueError(f"heads {self.heads} must divide the encoder width {self.filters[-1]} (last filters)")
        return self


SPACE: dict[str, Distribution] = {
    "kernel_size": CategoricalDistribution(choices=(3, 5)),
    "heads": CategoricalDistribution(choices=(2, 4, 8)),
    "ff_units": CategoricalDistribution(choices=(128, 256, 512)),
    "encoder_layers": IntDistribution(low=1, high=2),
    "dropout": FloatDistribution(low=0.0, high=0.5, step=0.1),
    "lr": CategoricalDistribution(choices=(1e-3, 1e-4, 1e-5)),
    "optimizer": CategoricalDistribution(choices=("adam", "rmsprop")),
}
