"""The LSTM-CNN network of Serra (LoopQPrize 2022): an LSTM over the frames, then 1D conv blocks.

    (B, 1, F, T) map -> (B, T, F) frames -> LSTM returning its whole sequence (B, T, H) -> dropout
    -> (B, H, T), LSTM units as channels -> 1D conv blocks over time (`nas.ops.blocks`) -> (B, C, T')
    -> mean over time (B, C) -> dropout -> Linear -> logits

F is fixed by the genome's FeatureSpec; T may vary (the maps are padded to one duration).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.ops.blocks import check_map, conv_stack, map_rows
from search_spaces.lstm_cnn import LstmCnnArchitecture


class LstmCnn(nn.Module):
    """(B, 1, F, T) map -> (B, n_classes) logits."""

    def __init__(self, arch: LstmCnnArchitecture, input_shape: tuple[int, int, int], n_classes: int) -> None:
        super().__init__()
        f = map_rows(input_shape)
        self.input_shape = input_shape
        self.lstm = nn.LSTM(f, arch.lstm_units, batch_first=True)
        self.convs = conv_stack(arch.lstm_units, arch.filters(), arch.kernel_size, dims=1)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(arch.filters()[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_map(x, self.input_shape[1])
        frames = x[:, 0].transpose(1, 2)  # (B, 1, F, T) -> (B, F, T) -> (B, T, F)
        seq, _ = self.lstm(frames)  # (B, T, H), the state after every frame
        h = self.convs(self.dropout(seq).transpose(1, 2))  # (B, T, H) -> (B, H, T) -> (B, C, T')
        pooled = h.mean(dim=2)  # (B, C, T') -> (B, C)
        return self.classifier(self.dropout(pooled))  # (B, n_classes)


def build(arch: LstmCnnArchitecture, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    return LstmCnn(arch, input_shape, n_classes)
