"""EinFFT, the channel mixer of SiMBA (Patro & Agneeswaran, 2024, "SiMBA: Simplified Mamba-Based
Architecture for Vision and Multivariate Time Series"), for variable-length sequences.

A sequence (n, C) is taken to the frequency domain along the sequence, its C channels are mixed by
two block-diagonal complex linear layers (C split into `blocks` blocks of C / blocks channels, each
block mixed by its own complex matrix through an einsum, SiMBA's "Einstein matrix multiplication")
with a ReLU on the real and imaginary parts between them and a soft-shrink after them (which zeroes
small frequency components: SiMBA's sparsity threshold), then taken back and its real part kept.
Weights, biases, their 0.02 * N(0, 1) initialisation, the 4 blocks and the 0.01 threshold are those
of SiMBA's released EinFFT; like Wang & Duan (2025, HMoE-SiMBA) the transform runs along the
sequence only, where SiMBA's image code transforms along the tokens and the channel blocks jointly.

The spectrum of a sequence depends on how long the transform is, and the frequency-domain
nonlinearities make that matter for every output frame: a sample's FFT spans exactly its own valid
frames, so its output cannot depend on how much padding its batch carries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EinFFT(nn.Module):
    """(B, T, C) frames + (B,) lengths -> (B, T, C), zero at padded frames, which it never reads."""

    def __init__(self, dim: int, blocks: int = 4, sparsity_threshold: float = 0.01) -> None:
        super().__init__()
        assert dim >= 1 and blocks >= 1 and dim % blocks == 0, f"{blocks} blocks must divide the {dim} channels"
        self.dim = dim
        self.blocks = blocks
        self.block_size = dim // blocks
        self.sparsity_threshold = sparsity_threshold
        scale = 0.02
        shape = (2, blocks, self.block_size, self.block_size)  # [0]: real part, [1]: imaginary part
        self.complex_weight_1 = nn.Parameter(torch.randn(shape) * scale)
        self.complex_weight_2 = nn.Parameter(torch.randn(shape) * scale)
        self.complex_bias_1 = nn.Parameter(torch.randn(2, blocks, self.block_size) * scale)
        self.complex_bias_2 = nn.Parameter(torch.randn(2, blocks, self.block_size) * scale)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 3 and x.shape[2] == self.dim, f"expected (B, T, {self.dim}), got {tuple(x.shape)}"
        assert lengths.shape == (x.shape[0],), f"expected lengths of shape ({x.shape[0]},), got {tuple(lengths.shape)}"
        out = torch.zeros_like(x)
        # Samples of equal length share one transform; batches padded or cut to max_frames have few lengths.
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).squeeze(1)  # (b,) indices of the samples this long
            out[rows, :length] = self._mix(x[rows, :length])  # (b, length, C)
        return out

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        """(b, n, C) fully valid frames -> (b, n, C)."""
        b, n, c = x.shape
        blocked = x.reshape(b, n, self.blocks, self.block_size)  # (b, n, C) -> (b, n, blocks, C / blocks)
        spectrum = torch.fft.fft(blocked, dim=1, norm="ortho")  # complex (b, n, blocks, C / blocks), n frequencies
        h = self._block_linear(spectrum, self.complex_weight_1, self.complex_bias_1)
        h = torch.complex(F.relu(h.real), F.relu(h.imag))
        h = self._block_linear(h, self.complex_weight_2, self.complex_bias_2)
        h = torch.complex(F.softshrink(h.real, self.sparsity_threshold), F.softshrink(h.imag, self.sparsity_threshold))
        frames = torch.fft.ifft(h, dim=1, norm="ortho").real  # (b, n, blocks, C / blocks), back along the sequence
        return frames.reshape(b, n, c)  # (b, n, blocks, C / blocks) -> (b, n, C)

    @staticmethod
    def _block_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Complex h (b, n, blocks, s) times each block's complex (s, s) matrix, plus a complex bias."""
        w = torch.complex(weight[0], weight[1])  # (blocks, s, s)
        return torch.einsum("bnks,kst->bnkt", h, w) + torch.complex(bias[0], bias[1])  # (b, n, blocks, s)
