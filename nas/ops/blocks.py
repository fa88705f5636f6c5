"""The convolutional block of Serra's (LoopQPrize 2022) CNN-LSTM, LSTM-CNN and CNN-Transformer families.

    conv (stride 1, "same" padding) -> batch norm -> ELU -> max pool 2

in 1D (over time, feature rows or LSTM units as channels) and in 2D (over the (F, T) map). Every block
maps each spatial axis of n positions to ceil(n / 2): the pool keeps an odd axis' last position and a
1-wide axis stays 1, so any stack runs on any input size (`pooled_size` gives the result).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# dims -> (conv, batch norm, max pool) of that many spatial axes
_LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
}


def conv_block(c_in: int, c_out: int, kernel_size: int, dims: int) -> nn.Sequential:
    """(B, c_in, *S) -> (B, c_out, *ceil(S / 2)), S the `dims` spatial axes."""
    assert dims in _LAYERS, f"dims must be 1 or 2, got {dims}"
    assert kernel_size >= 1, f"kernel_size must be positive, got {kernel_size}"
    conv, norm, pool = _LAYERS[dims]
    return nn.Sequential(
        # "same" rather than kernel_size // 2: an even kernel would otherwise add one position per block.
        # No bias: the batch norm's shift would cancel it.
        conv(c_in, c_out, kernel_size, padding="same", bias=False),
        norm(c_out),
        nn.ELU(),
        pool(2, ceil_mode=True),
    )


def conv_stack(c_in: int, filters: Sequence[int], kernel_size: int, dims: int) -> nn.Sequential:
    """One `conv_block` per entry of `filters` (e.g. `ConvStack.filters()`): (B, c_in, *S) -> (B, filters[-1], *S')."""
    assert len(filters) >= 1, "a conv stack needs at least one block"
    blocks = []
    for c_out in filters:
        blocks.append(conv_block(c_in, c_out, kernel_size, dims))
        c_in = c_out
    return nn.Sequential(*blocks)


def pooled_size(n: int, blocks: int) -> int:
    """Positions left of an axis of n after `blocks` blocks."""
    for _ in range(blocks):
        n = -(-n // 2)  # ceil(n / 2)
    return n


def map_rows(input_shape: tuple[int, ...]) -> int:
    """The feature rows F of a map input shape (1, F, T), checked."""
    assert len(input_shape) == 3 and input_shape[0] == 1, f"input_shape is a map (1, F, T), got {input_shape}"
    _, f, t = input_shape
    assert f >= 1 and t >= 1, f"input_shape (1, F, T) must be positive, got {input_shape}"
    return f


def check_map(x: torch.Tensor, rows: int) -> None:
    """`x` is a batch of maps (B, 1, F, T) with F == rows."""
    assert x.dim() == 4, f"expected a map (B, 1, F, T), got shape {tuple(x.shape)}"
    assert x.shape[1:3] == (1, rows), f"expected (1, F) = (1, {rows}), got {tuple(x.shape[1:3])}"
