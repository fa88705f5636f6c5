"""The CNN-LSTM families of Serra (LoopQPrize 2022): CNN2D-LSTM, CNN1D-LSTM and the two fused.

Every convolutional block is conv -> batch norm -> ELU -> max pool. The 2D variant reads a log-mel
map (128 mels of audio padded to 8 s: 128 x 251) as an image; the 1D variant reads the feature rows
(40 MFCC, optionally + chroma, + mel) as channels and convolves over time; the fused variant runs
both on one stacked map (its first `split_rows` rows to the 1D branch, the rest to the 2D branch) and
concatenates the two LSTMs' final states. The paper's Hyperband space for CNN2D-LSTM is `SPACE_2D`:
kernel size {3, 5}, 1-4 blocks, {32, 64, 128} filters in the first block and {64, 128, 256} in the
later ones, 32-64 LSTM units (step 4), lr {1e-3, 1e-4, 1e-5}, Adam or RMSprop; the 1D variants add
dropout. Its best CNN2D-LSTM (kernel 5, 3 blocks, 128 then 256 filters, 48 units) is the default.

This module is torch-free: the networks are built by `nas.models.cnn_lstm`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nas.recipe import TrainRecipe
from search_spaces.distributions import CategoricalDistribution, Distribution, FloatDistribution, IntDistribution


class ConvStack(BaseModel):
    """A stack of conv -> batch norm -> ELU -> max pool blocks, the paper's convolutional front."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel_size: int = Field(5, ge=1, le=9, description="square (2D) or temporal (1D) kernel of every conv")
    blocks: int = Field(3, ge=1, le=6, description="conv blocks, each halving the map with its max pool")
    first_filters: int = Field(128, ge=1, description="filters of the first block")
    later_filters: int = Field(256, ge=1, description="filters of every later block")

    def filters(self) -> tuple[int, ...]:
        return (self.first_filters,) + (self.later_filters,) * (self.blocks - 1)


class Cnn2dLstmArchitecture(ConvStack):
    """2D conv blocks over the (F, T) map, then an LSTM over time, its final state to the classifier."""

    family: Literal["cnn2d-lstm"] = "cnn2d-lstm"
    lstm_units: int = Field(48, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1, description="before the classifier")


class Cnn1dLstmArchitecture(ConvStack):
    """1D conv blocks over time with the feature rows as channels, then an LSTM."""

    family: Literal["cnn1d-lstm"] = "cnn1d-lstm"
    lstm_units: int = Field(48, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1, description="after the conv blocks and before the classifier")


class FusedCnnLstmArchitecture(ConvStack):
    """A CNN1D-LSTM branch on the first `split_rows` feature rows (MFCC) and a CNN2D-LSTM branch on the
    rest (log-mel); both LSTMs' final states are concatenated."""

    family: Literal["cnn-lstm-fused"] = "cnn-lstm-fused"
    split_rows: int = Field(40, ge=1, description="feature rows of the 1D branch; the rest feed the 2D branch")
    lstm_units: int = Field(48, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)


_CONV_SPACE: dict[str, Distribution] = {
    "kernel_size": CategoricalDistribution(choices=(3, 5)),
    "blocks": IntDistribution(low=1, high=4),
    "first_filters": CategoricalDistribution(choices=(32, 64, 128)),
    "later_filters": CategoricalDistribution(choices=(64, 128, 256)),
    "lstm_units": IntDistribution(low=32, high=64, step=4),
    "lr": CategoricalDistribution(choices=(1e-3, 1e-4, 1e-5)),
    "optimizer": CategoricalDistribution(choices=("adam", "rmsprop")),
}

SPACE_2D: dict[str, Distribution] = dict(_CONV_SPACE)
SPACE_1D: dict[str, Distribution] = {**_CONV_SPACE, "dropout": FloatDistribution(low=0.0, high=0.5, step=0.1)}

# Keras' defaults as the paper trained: Adam at 1e-4 (its best), batch 32, a constant rate; Hyperband
# (not patience) decides how long a configuration trains.
RECIPE = TrainRecipe(
    epochs=50, batch_size=32, optimizer="adam", lr=1e-4, schedule="constant", grad_clip=None, monitor="val_ua"
)
