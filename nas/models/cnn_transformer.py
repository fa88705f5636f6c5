"""The CNN-Transformer network of Serra (LoopQPrize 2022), its encoder as in Vaswani et al. (2017).

    (B, 1, F, T) map -> 2D conv blocks (`nas.ops.blocks`, one per `arch.filters`) -> (B, C, F', T')
    -> mean over frequency -> (B, T', C) -> + sinusoidal positions -> dropout
    -> `encoder_layers` post-norm transformer encoder layers (self-attention + feed-forward, d_model = C)
    -> mean over time (B, C) -> Linear -> logits

F is fixed by the genome's FeatureSpec; T may vary (the maps are padded to one duration, so no
attention mask is needed), and the positions are computed for the T' at hand.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nas.ops.blocks import check_map, conv_stack, map_rows
from search_spaces.cnn_transformer import CnnTransformerArchitecture


def sinusoidal_positions(t: int, d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(T, D): PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(p / 10000^(2i/D)) (Vaswani et al., 2017, 3.5)."""
    position = torch.arange(t, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    angles = position * inv_freq  # (T, 1) * (ceil(D/2),) -> (T, ceil(D/2))
    pe = torch.empty(t, d, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d // 2])  # an odd D has one cosine column fewer than sines
    return pe.to(dtype)


class CnnTransformer(nn.Module):
    """(B, 1, F, T) map -> (B, n_classes) logits."""

    def __init__(self, arch: CnnTransformerArchitecture, input_shape: tuple[int, int, int], n_classes: int) -> None:
        super().__init__()
        map_rows(input_shape)  # checks it is a map
        width = arch.filters[-1]
        assert width % arch.heads == 0, f"heads {arch.heads} must divide the encoder width {width}"
        self.input_shape = input_shape
        self.convs = conv_stack(1, arch.filters, arch.kernel_size, dims=2)
        self.dropout = nn.Dropout(arch.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=width, nhead=arch.heads, dim_feedforward=arch.ff_units, dropout=arch.dropout, batch_first=True
        )
        # Nested tensors only pay off with a padding mask, which equal-length maps never need.
        self.encoder = nn.TransformerEncoder(layer, arch.encoder_layers, enable_nested_tensor=False)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_map(x, self.input_shape[1])
        h = self.convs(x)  # (B, C, F', T')
        seq = h.mean(dim=2).transpose(1, 2)  # (B, C, F', T') -> (B, C, T') -> (B, T', C)
        _, t, c = seq.shape
        seq = self.dropout(seq + sinusoidal_positions(t, c, seq.device, seq.dtype))  # (B, T', C) + (T', C)
        out = self.encoder(seq)  # (B, T', C)
        return self.classifier(out.mean(dim=1))  # (B, T', C) -> (B, C) -> (B, n_classes)


def build(arch: CnnTransformerArchitecture, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    return CnnTransformer(arch, input_shape, n_classes)
