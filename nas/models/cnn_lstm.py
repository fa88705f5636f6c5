"""The CNN-LSTM networks of Serra (LoopQPrize 2022): CNN2D-LSTM, CNN1D-LSTM and the fused model.

The input is a map (B, 1, F, T) of stacked feature rows: F is fixed by the genome's FeatureSpec, T may
vary (the maps are padded to one duration, so no lengths are needed). Every conv block is
`nas.ops.blocks.conv_block` (conv -> batch norm -> ELU -> max pool 2):

    CNN2D-LSTM: 2D blocks over the map -> (B, C, F', T') -> (B, T', C * F') -> LSTM -> final state (B, H)
    CNN1D-LSTM: rows as channels (B, F, T) -> 1D blocks over time -> (B, C, T') -> dropout
                -> (B, T', C) -> LSTM -> final state (B, H)
    fused:      rows [:split_rows] -> the CNN1D-LSTM encoder, rows [split_rows:] -> the CNN2D-LSTM
                encoder -> both final states (B, 2H)
    -> dropout -> Linear -> logits

Keras' LSTM with return_sequences=False returns the state after the last frame, h_n of nn.LSTM.
The parameter count differs from the Keras model's: torch's LSTM has two bias vectors (Keras one) and
the convs carry none (the batch norm's shift replaces it).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.errors import ConfigError
from nas.ops.blocks import check_map, conv_stack, map_rows, pooled_size
from search_spaces.cnn_lstm import (
    Cnn1dLstmArchitecture,
    Cnn2dLstmArchitecture,
    ConvStack,
    FusedCnnLstmArchitecture,
)

CnnLstmArchitecture = Cnn2dLstmArchitecture | Cnn1dLstmArchitecture | FusedCnnLstmArchitecture


class Cnn2dLstmEncoder(nn.Module):
    """(B, 1, F, T) -> (B, H): 2D conv blocks over the map, an LSTM over time, its final state."""

    def __init__(self, stack: ConvStack, rows: int, lstm_units: int) -> None:
        super().__init__()
        self.rows = rows
        self.convs = conv_stack(1, stack.filters(), stack.kernel_size, dims=2)
        c, f = stack.filters()[-1], pooled_size(rows, stack.blocks)
        self.lstm = nn.LSTM(c * f, lstm_units, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_map(x, self.rows)
        h = self.convs(x)  # (B, C, F', T')
        b, c, f, t = h.shape
        # Time becomes the sequence axis, channels x frequencies the per-frame vector.
        seq = h.permute(0, 3, 1, 2).reshape(b, t, c * f)  # (B, C, F', T') -> (B, T', C, F') -> (B, T', C * F')
        _, (h_n, _) = self.lstm(seq)  # h_n (1, B, H)
        return h_n[-1]  # (B, H)


class Cnn1dLstmEncoder(nn.Module):
    """(B, 1, F, T) -> (B, H): 1D conv blocks over time with the F rows as channels, dropout, an LSTM,
    its final state."""

    def __init__(self, stack: ConvStack, rows: int, lstm_units: int, dropout: float) -> None:
        super().__init__()
        self.rows = rows
        self.convs = conv_stack(rows, stack.filters(), stack.kernel_size, dims=1)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(stack.filters()[-1], lstm_units, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_map(x, self.rows)
        h = self.dropout(self.convs(x[:, 0]))  # (B, 1, F, T) -> (B, F, T) -> (B, C, T')
        seq = h.transpose(1, 2)  # (B, C, T') -> (B, T', C)
        _, (h_n, _) = self.lstm(seq)  # h_n (1, B, H)
        return h_n[-1]  # (B, H)


class CnnLstm(nn.Module):
    """(B, 1, F, T) map -> (B, n_classes) logits: a CNN2D-LSTM or CNN1D-LSTM encoder's final state,
    dropout, a linear classifier."""

    def __init__(
        self, arch: Cnn2dLstmArchitecture | Cnn1dLstmArchitecture, input_shape: tuple[int, int, int], n_classes: int
    ) -> None:
        super().__init__()
        f = map_rows(input_shape)
        self.input_shape = input_shape
        self.encoder: nn.Module = (
            Cnn2dLstmEncoder(arch, f, arch.lstm_units)
            if isinstance(arch, Cnn2dLstmArchitecture)
            else Cnn1dLstmEncoder(arch, f, arch.lstm_units, arch.dropout)
        )
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(arch.lstm_units, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder(x)))  # (B, H) -> (B, n_classes)


class FusedCnnLstm(nn.Module):
    """(B, 1, F, T) map -> (B, n_classes) logits: rows [:split_rows] (MFCC) through a CNN1D-LSTM
    encoder, the rest (log-mel) through a CNN2D-LSTM encoder, both final states classified together."""

    def __init__(self, arch: FusedCnnLstmArchitecture, input_shape: tuple[int, int, int], n_classes: int) -> None:
        super().__init__()
        f = map_rows(input_shape)
        if not 0 < arch.split_rows < f:
            # A user's choice (a fixed value or the default 40) against the feature spec, so an error, not an assert.
            raise ConfigError(
                f"cnn-lstm-fused: split_rows {arch.split_rows} must leave rows to both branches of the "
                f"{f}-row input (0 < split_rows < {f}); set split_rows to the rows of the 1D branch's features"
            )
        self.input_shape = input_shape
        self.split_rows = arch.split_rows
        self.encoder_1d = Cnn1dLstmEncoder(arch, arch.split_rows, arch.lstm_units, arch.dropout)
        self.encoder_2d = Cnn2dLstmEncoder(arch, f - arch.split_rows, arch.lstm_units)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(2 * arch.lstm_units, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_map(x, self.input_shape[1])
        s = self.split_rows
        states = torch.cat([self.encoder_1d(x[:, :, :s]), self.encoder_2d(x[:, :, s:])], dim=1)  # 2 x (B, H) -> (B, 2H)
        return self.classifier(self.dropout(states))  # (B, 2H) -> (B, n_classes)


def build(arch: CnnLstmArchitecture, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    if isinstance(arch, Cnn2dLstmArchitecture | Cnn1dLstmArchitecture):
        return CnnLstm(arch, input_shape, n_classes)
    if isinstance(arch, FusedCnnLstmArchitecture):
        return FusedCnnLstm(arch, input_shape, n_classes)
    raise TypeError(f"not a CNN-LSTM architecture: {type(arch).__name__}")
