"""Building blocks shared by the emoDARTS supernet and the discrete models built from genomes.

`CellNetwork` is the emoDARTS layout both use; they differ only in their cells (mixed edges
weighted by architecture parameters vs one op per edge):

    (B, 1, F, T) -> stem conv -> CNN cells -> (B, C', F', T')
      seq_cells == 0: global average pool over (F', T') -> (B, C')
      seq_cells > 0:  (B, T', C' * F') -> Linear to H -> SeqNN cells -> mean over time -> (B, H)
    -> dropout -> Linear -> (B, n_classes)

Every sample is processed on its own in eval mode: time stays a sequence axis and the batch axis
is never mixed (BatchNorm uses batch statistics only in training, as always).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from nas.errors import ConfigError
from nas.ops.cnn import BatchNorm2d, threads

# (c_pp, c_p, c, reduction_prev, reduction) -> a cell whose `out_channels` says how wide its output is
CnnCellFactory = Callable[[int, int, int, bool, bool], nn.Module]
SeqCellFactory = Callable[[int], nn.Module]  # hidden size H -> a cell mapping two (B, T, H) states to one


class CellNetwork(nn.Module):
    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        n_classes: int,
        cnn_cells: int,
        reduction_cells: tuple[int, ...],
        init_channels: int,
        stem_multiplier: int,
        seq_cells: int,
        seq_hidden: int,
        dropout: float,
        make_cnn_cell: CnnCellFactory,
        make_seq_cell: SeqCellFactory,
    ) -> None:
        super().__init__()
        c_in, f, t = input_shape
        c_stem = stem_multiplier * init_channels
        self.stem = nn.Sequential(nn.Conv2d(c_in, c_stem, 3, padding=1, bias=False), BatchNorm2d(c_stem))

        # The first cell sees the stem output as both of its inputs; reduction cells double the width.
        c_pp, c_p, c = c_stem, c_stem, init_channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cnn_cells):
            reduction = i in reduction_cells
            if reduction:
                c *= 2
                f, t = -(-f // 2), -(-t // 2)  # stride-2 ops keep ceil(size / 2) positions
            cell = make_cnn_cell(c_pp, c_p, c, reduction_prev, reduction)
            self.cells.append(cell)
            c_pp, c_p, reduction_prev = c_p, cell.out_channels, reduction
        if f * t < 2:
            raise ConfigError(
                f"the CNN reduces the {input_shape[1]}x{input_shape[2]} input to 1x1, where batch norm "
                "cannot train on a batch of one; use a larger input or fewer CNN cells"
            )

        self.input_shape = input_shape
        self.feature_shape = (c_p, f, t)  # of the CNN's output, (C', F', T')
        self.seq_cells = nn.ModuleList(make_seq_cell(seq_hidden) for _ in range(seq_cells))
        self.bridge = nn.Linear(c_p * f, seq_hidden) if seq_cells else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(seq_hidden if seq_cells else c_p, n_classes)
        # Channels-last: oneDNN, the CPU conv backend, has its fast depthwise kernels only for it.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, arch_weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 1, F, T) -> (B, n_classes); supernet cells take `arch_weights[kind]` ("normal",
        "reduce", "seq"), discrete cells take nothing."""
        return self.head(self.cnn(x, arch_weights), arch_weights)

    def cnn(self, x: torch.Tensor, arch_weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 1, F, T) -> (B, C', F', T'): stem and CNN cells."""
        assert x.dim() == 4, f"expected input (B, C, F, T), got {tuple(x.shape)}"
        s0 = s1 = self.stem(x.contiguous(memory_format=torch.channels_last))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *_extra(arch_weights, "reduce" if cell.reduction else "normal"))
        return s1

    def head(self, features: torch.Tensor, arch_weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, C', F', T') -> (B, n_classes): SeqNN cells (if any), pooling and classifier."""
        if self.bridge is None:
            pooled = features.mean(dim=(2, 3))  # (B, C', F', T') -> (B, C')
        else:
            seq = features.permute(0, 3, 1, 2).flatten(2)  # (B, C', F', T') -> (B, T', C', F') -> (B, T', C' * F')
            # The SeqNN part is thousands of tiny ops (per time step, per layer): a second thread
            # only adds a wake-up to each, and on a loaded CPU a wait for a descheduled thread
            # (measured 2x slower on a quiet machine, 30x on a loaded one). One thread for its
            # forward, and for its backward from where the gradient enters it to where it leaves.
            outer = torch.get_num_threads()
            with threads(1):
                seq = _BackwardThreads.apply(outer, seq)  # reached last in backward: restore
                s0 = s1 = self.bridge(seq)  # (B, T', H)
                for cell in self.seq_cells:
                    s0, s1 = s1, cell(s0, s1, *_extra(arch_weights, "seq"))
                s1 = _BackwardThreads.apply(1, s1, outer)  # reached first in backward
            pooled = s1.mean(dim=1)  # temporal mean pooling: (B, T', H) -> (B, H)
        return self.classifier(self.dropout(pooled))


class _BackwardThreads(torch.autograd.Function):
    """Identity whose backward sets the number of intra-op threads to `n` for the rest of the
    backward pass (which runs on this thread on CPU, in reverse order of the forward). With
    `restore_at_end`, that count is set again when the whole backward pass ends, also when the
    gradient never reaches the node that would restore it (e.g. a gradient for SeqNN alphas only)."""

    @staticmethod
    def forward(ctx: Any, n: int, x: torch.Tensor, restore_at_end: int | None = None) -> torch.Tensor:
        ctx.n, ctx.restore_at_end = n, restore_at_end
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        torch.set_num_threads(ctx.n)
        if ctx.restore_at_end is not None:
            restore = ctx.restore_at_end
            torch.autograd.Variable._execution_engine.queue_callback(lambda: torch.set_num_threads(restore))
        return None, grad, None


def _extra(arch_weights: Mapping[str, torch.Tensor] | None, kind: str) -> tuple[torch.Tensor, ...]:
    return () if arch_weights is None else (arch_weights[kind],)
