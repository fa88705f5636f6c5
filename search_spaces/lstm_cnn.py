"""LSTM-CNN (Serra, LoopQPrize 2022): an LSTM that returns its whole sequence, then 1D conv blocks.

The LSTM reads the feature rows of each frame; its (T, H) output is convolved over time by conv ->
batch norm -> ELU -> max pool blocks, averaged over time and classified. Torch-free: the network is
built by `nas.models.lstm_cnn`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from search_spaces.cnn_lstm import SPACE_1D, ConvStack
from search_spaces.distributions import Distribution


class LstmCnnArchitecture(ConvStack):
    family: Literal["lstm-cnn"] = "lstm-cnn"
    lstm_units: int = Field(48, ge=1, description="units of the sequence-returning LSTM")
    dropout: float = Field(0.2, ge=0, lt=1, description="after the LSTM and before the classifier")


SPACE: dict[str, Distribution] = dict(SPACE_1D)
