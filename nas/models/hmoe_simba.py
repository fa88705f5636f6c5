"""HMoE-SiMBA (Wang & Duan, 2025): heterogeneous experts mixed by a router, then SiMBA, over frame sequences.

Frames (B, T, D), zero-padded to a common T, with their true lengths (B,):

    experts, in parallel, each (B, T, D) -> (B, T, E):
        LSTM (packed, so it never reads padding) | 1D CNN over time | transformer encoder
    router: mean of the valid input frames (B, D) -> MLP, two ReLU hidden layers -> softmax (B, 3)
    mixture: sum_k weight_k * expert_k -> (B, T, E); without the router, the plain mean of the experts
    SiMBA (optional): Linear E -> D_sel, then residual EinFFT and residual Mamba -> (B, T, D_sel)
    mean over the valid frames -> dropout -> Linear -> logits

The paper runs EinFFT and then Mamba on the mixture. How they are wired it does not say; here each is
a pre-norm residual branch, as in SiMBA's own blocks (Patro & Agneeswaran, 2024). Padded frames are
zeroed after every layer that could make them non-zero, and none can reach a valid frame: the LSTM
reads packed sequences, attention masks padded keys, the CNN's zero padding and the zeroed padded
frames look alike, EinFFT transforms each sample over its own frames, Mamba is causal and padding
only ever follows the valid frames, and the pooling averages valid frames only. So a sample's logits
do not depend on how much padding its batch has. Softmax is left to the loss: this returns logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nas.ops.einfft import EinFFT
from nas.ops.frames import check_frames, frame_width
from nas.ops.mamba import make_mamba
from search_spaces.hmoe_simba import HmoeSimbaArchitecture


def zero_padding(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, C) with the frames where `valid` (B, T) is False set to zero."""
    return h.masked_fill(~valid[:, :, None], 0.0)


def masked_mean(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, C), zero at padded frames -> (B, C), the mean over each sample's valid frames."""
    return h.sum(dim=1) / lengths[:, None].to(h.dtype)


class LstmExpert(nn.Module):
    """Stacked unidirectional LSTM: the evolution of the emotional state over time."""

    def __init__(self, d_in: int, width: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_in, width, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Packing keeps each sample's valid frames only; pack_padded_sequence wants the lengths on the CPU.
        packed = pack_padded_sequence(x, lengths.cpu().long(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)  # PackedSequence of (sum(lengths), E)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, E), zeros at padding
        return out


class CnnExpert(nn.Module):
    """Conv -> ReLU -> dropout layers over time with the frame features as channels: local patterns."""

    def __init__(self, d_in: int, width: int, layers: int, kernel: int, dropout: float) -> None:
        super().__init__()
        assert kernel % 2 == 1, f"the kernel must be odd to keep every frame, got {kernel}"
        self.convs = nn.ModuleList(
            nn.Conv1d(d_in if i == 0 else width, width, kernel, padding=kernel // 2) for i in range(layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, T, D) -> (B, D, T): Conv1d convolves the last axis
        keep = valid[:, None, :]  # (B, T) -> (B, 1, T)
        for conv in self.convs:
            # Padded frames are zeroed before the next layer reads them, so a valid frame near the end
            # sees zeros there, just as the conv's own zero padding at T would give it.
            h = self.dropout(torch.relu(conv(h))) * keep  # (B, E, T)
        return h.transpose(1, 2)  # (B, E, T) -> (B, T, E)


class TransformerExpert(nn.Module):
    """Linear D -> E, sinusoidal positions, post-norm transformer encoder layers (Vaswani et al., 2017)."""

    def __init__(self, d_in: int, width: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        assert width % heads == 0, f"{heads} heads must divide the width {width}"
        self.width = width
        self.proj = nn.Linear(d_in, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, batch_first=True)
        # Nested tensors would drop trailing padding from the output: keep (B, T, E) throughout.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def positions(self, t: int, device: torch.device) -> torch.Tensor:
        """(T, E) sinusoidal encoding: sin at even features 2i, cos at odd 2i + 1, frequency 10000^(-2i / E)."""
        rates = torch.exp(torch.arange(0, self.width, 2, device=device) * (-math.log(10000.0) / self.width))
        angles = torch.arange(t, device=device)[:, None] * rates  # (T, 1) * (ceil(E / 2),) -> (T, ceil(E / 2))
        # (T, ceil(E / 2), 2) -> (T, 2 ceil(E / 2)), interleaved sin, cos; an odd E drops the last cos
        return torch.stack([angles.sin(), angles.cos()], dim=2).flatten(1)[:, : self.width]

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) + self.positions(x.shape[1], x.device)  # (B, T, E) + (T, E)
        h = self.encoder(h, src_key_padding_mask=~valid)  # (B, T, E); True in the mask: a padded key, ignored
        return zero_padding(h, valid)


class Router(nn.Module):
    """The multi-expert routing network: (B, D) utterance summary -> (B, K) expert weights summing to 1."""

    def __init__(self, d_in: int, hidden: int, experts: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, experts)
        )

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.mlp(summary), dim=-1)


class Simba(nn.Module):
    """Channel selection E -> D_sel, then EinFFT and Mamba, each a pre-norm residual branch."""

    def __init__(self, d_in: int, dim: int, blocks: int, d_state: int) -> None:
        super().__init__()
        self.select = nn.Linear(d_in, dim)
        self.einfft_norm = nn.LayerNorm(dim)
        self.einfft = EinFFT(dim, blocks)
        self.mamba_norm = nn.LayerNorm(dim)
        self.mamba = make_mamba(dim, d_state)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = zero_padding(self.select(h), valid)  # (B, T, E) -> (B, T, D_sel)
        # EinFFT reads each sample's valid frames only and returns zeros at padding.
        h = h + self.einfft(self.einfft_norm(h), lengths)  # (B, T, D_sel)
        h = h + self.mamba(zero_padding(self.mamba_norm(h), valid))  # (B, T, D_sel)
        return zero_padding(h, valid)


class HmoeSimba(nn.Module):
    """(B, T, D) zero-padded frames + (B,) lengths -> (B, n_classes) logits."""

    def __init__(self, arch: HmoeSimbaArchitecture, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        d = frame_width(input_shape)
        assert n_classes >= 2, f"need at least 2 classes, got {n_classes}"
        self.arch = arch
        self.input_shape = tuple(input_shape)
        e = arch.expert_dim
        self.lstm = LstmExpert(d, e, arch.lstm_layers, arch.dropout)
        self.cnn = CnnExpert(d, e, arch.cnn_layers, arch.cnn_kernel, arch.dropout)
        self.transformer = TransformerExpert(d, e, arch.transformer_heads, arch.transformer_layers, arch.dropout)
        self.router = Router(d, arch.router_hidden, experts=3) if arch.router else None
        self.simba = Simba(e, arch.einfft_dim, arch.einfft_blocks, arch.d_state) if arch.simba else None
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(arch.einfft_dim if arch.simba else e, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = check_frames(x, lengths, self.input_shape[1])  # (B, T) bool
        lengths = lengths.to(x.device)
        x = zero_padding(x, valid)  # (B, T, D): whatever the caller padded with, padding is zero from here on

        experts = torch.stack([self.lstm(x, lengths), self.cnn(x, valid), self.transformer(x, valid)], dim=1)
        # experts: 3 x (B, T, E) -> (B, 3, T, E), each zero at padding
        if self.router is None:
            h = experts.mean(dim=1)  # (B, 3, T, E) -> (B, T, E)
        else:
            weights = self.router(masked_mean(x, lengths))  # (B, D) -> (B, 3), per utterance
            h = torch.einsum("bk,bkte->bte", weights, experts)  # (B, 3) x (B, 3, T, E) -> (B, T, E)
        if self.simba is not None:
            h = self.simba(h, lengths, valid)  # (B, T, E) -> (B, T, D_sel)
        return self.classifier(self.dropout(masked_mean(h, lengths)))  # (B, C) -> (B, n_classes)


def build(arch: HmoeSimbaArchitecture, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return HmoeSimba(arch, input_shape, n_classes)
