"""Candidate operations of the emoDARTS CNN cells (the DARTS set), shared by supernet and discrete model.

Every op maps (B, C, H, W) -> (B, C, ceil(H / s), ceil(W / s)) for stride s in {1, 2}, for odd
sizes too (our inputs are 128x128, 40x64 or tiny test maps), so the states of a cell always line up.
The supernet builds them with `affine=False` (as DARTS does) so that the architecture weights
alone scale each op's output.

Every op with parameters is an nn.Sequential(nn.ReLU, ..., nn.BatchNorm2d): the supernet relies
on that to apply the ReLU once per cell state instead of once per op and edge, and to fold its
architecture weight into the final BN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from search_spaces.darts import CNN_OPS as CNN_OP_NAMES

CACHE_LINE = 64  # bytes
_FROZEN_STATS = ContextVar("frozen_bn_statistics", default=False)


@contextmanager
def frozen_running_stats() -> Iterator[None]:
    """BNs keep their running statistics in this block: a forward recomputed during backward
    (activation checkpointing) must not count its batch a second time."""
    token = _FROZEN_STATS.set(True)
    try:
        yield
    finally:
        _FROZEN_STATS.reset(token)


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (None: as many as now)."""
    if n is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class _SingleThreadBatchNorm(torch.autograd.Function):
    """Training-mode BN computed by ATen's own kernels, on one thread.

    ATen's channels-last CPU BN accumulates per-thread statistics in adjacent rows of C values;
    when a row is not a whole number of cache lines (8 or 24 float32 channels, as in emoDARTS'
    first cell and stem), the threads keep invalidating each other's cache line, and two
    threads run 2-4x slower than one (much worse still when the CPU is shared).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        with threads(1):
            y, mean, invstd = torch.ops.aten.native_batch_norm(
                x, weight, bias, running_mean, running_var, True, momentum, eps
            )
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        with threads(1):
            dx, dw, db = torch.ops.aten.native_batch_norm_backward(
                grad, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
            )
        return dx, dw, db, None, None, None, None


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """`bn(x)` with `weight` as its scale (its own affine weight, or another one such as an
    architecture weight), avoiding the slow multithreaded case of `_SingleThreadBatchNorm`."""
    assert bn.momentum is not None and bn.track_running_stats, "BNs here keep running stats with a momentum"
    if not bn.training:
        return F.batch_norm(x, bn.running_mean, bn.running_var, weight, bn.bias, False, 0.0, bn.eps)
    frozen = _FROZEN_STATS.get()
    if not frozen:
        bn.num_batches_tracked.add_(1)  # as nn.BatchNorm2d does
    momentum = 0.0 if frozen else bn.momentum  # 0: the running statistics stay as they are
    false_sharing = (  # in float32, the training dtype; float64 (exact second-derivative tests) takes ATen's path
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.get_num_threads() > 1
        and x.is_contiguous(memory_format=torch.channels_last)
        and x.shape[1] * x.element_size() % CACHE_LINE != 0
    )
    if false_sharing:
        return _SingleThreadBatchNorm.apply(x, weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps)
    return F.batch_norm(x, bn.running_mean, bn.running_var, weight, bn.bias, True, momentum, bn.eps)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same parameters and buffers) through `batch_norm`'s faster CPU path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(self, x, self.weight)


class Zero(nn.Module):
    """The `none` op. Mixed ops never run it (its output is exactly zero); kept for completeness."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.new_zeros(b, c, -(-h // self.stride), -(-w // self.stride))  # ceil division


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN (pt.darts' StdConv); the 1x1 version preprocesses cell inputs."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            BatchNorm2d(c_out, affine=affine),
        )


class PoolBN(nn.Sequential):
    """3x3 max or average pooling, then BN (pooled maps have another scale than the conv outputs)."""

    def __init__(self, kind: str, c: int, stride: int, affine: bool) -> None:
        pool = (
            nn.MaxPool2d(3, stride, padding=1)
            if kind == "max"
            else nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        )
        super().__init__(pool, BatchNorm2d(c, affine=affine))


POLYPHASE = 2  # the dilation of the dilated convs and the stride of the reduction cells


@dataclass(frozen=True)
class Polyphase:
    """A map (B, C, H, W) split into its 2 x 2 polyphase components, in the form a layer that reads
    them needs: with stride 2, the even grid (pixels (2i, 2j)) and the offset grid ((2i + 1, 2j + 1)),
    each ceil(H / 2) x ceil(W / 2), zero-padded at the end for odd sizes; with stride 1, all four
    components stacked as channels (pixel_unshuffle: (B, 4C, ceil(H / 2), ceil(W / 2))).

    The dilated convs and FactorizedReduce read these. The supernet splits a cell state once for
    every such op on the edges leaving it (`Polyphase.split` of the state): one strided slice or
    unshuffle per op would copy the state once per op, and in backward zero-fill a full-size gradient
    once per op (~15% of a search step at the paper's configuration).
    """

    shape: torch.Size  # of the map that was split
    grids: tuple[torch.Tensor, torch.Tensor] | None  # stride 2: (even grid, offset grid)
    stacked: torch.Tensor | None  # stride 1

    @classmethod
    def split(cls, x: torch.Tensor, stride: int) -> Polyphase:
        assert stride in (1, POLYPHASE), f"a polyphase split serves stride 1 or {POLYPHASE}, not {stride}"
        _, _, h, w = x.shape
        pad = (0, w % POLYPHASE, 0, h % POLYPHASE)  # to whole components with zeros, as the convs pad anyway
        if stride == 1:
            padded = F.pad(x, pad) if any(pad) else x
            return cls(x.shape, None, F.pixel_unshuffle(padded, POLYPHASE))  # channel c * 4 + phase
        even = x[:, :, ::POLYPHASE, ::POLYPHASE]  # ceil(H / 2) x ceil(W / 2) already
        offset = x[:, :, 1::POLYPHASE, 1::POLYPHASE]  # floor(H / 2) x floor(W / 2)
        return cls(x.shape, (even, F.pad(offset, pad) if any(pad) else offset), None)


class DepthwiseConv(nn.Conv2d):
    """Depthwise conv, "same" padding; dilated ones run as an undilated conv on polyphase components.

    Same parameters and outputs as nn.Conv2d(c, c, k, stride, (k - 1), dilation=2, groups=c),
    but oneDNN (the CPU backend) has fast kernels only for undilated depthwise convs: dilated ones
    fall back to a gemm path whose backward is 3-10x slower than the whole rest of the op. A conv
    with dilation 2 reads the 2 x 2 polyphase components of its input separately, so with stride 2
    it is an undilated conv of the even grid, and with stride 1 one of all four components stacked
    as channels, interleaved back with pixel_shuffle (`Polyphase`).
    """

    def __init__(self, c: int, kernel: int, stride: int, dilation: int) -> None:
        assert dilation in (1, POLYPHASE), f"dilation must be 1 or {POLYPHASE}, got {dilation}"
        padding = dilation * (kernel - 1) // 2  # "same" padding: stride 2 gives ceil(H / 2)
        super().__init__(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False)
        self.reads_polyphase = dilation > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.reads_polyphase:
            return super().forward(x)
        return self.forward_polyphase(Polyphase.split(x, self.stride[0]))

    def forward_polyphase(self, x: Polyphase) -> torch.Tensor:
        p = (self.kernel_size[0] - 1) // 2  # the undilated conv's "same" padding
        if x.grids is not None:
            assert self.stride[0] == POLYPHASE, "a split for stride 2 serves strided convs"
            return F.conv2d(x.grids[0], self.weight, None, 1, p, 1, self.groups)
        assert x.stacked is not None and self.stride[0] == 1, "a split for stride 1 serves convs of stride 1"
        c, phases = self.groups, POLYPHASE * POLYPHASE
        y = F.conv2d(x.stacked, self.weight.repeat_interleave(phases, dim=0), None, 1, p, 1, c * phases)
        _, _, h, w = x.shape
        y = F.pixel_shuffle(y, POLYPHASE)  # (B, 4C, H / 2, W / 2) -> (B, C, H, W), padded sizes
        return y if y.shape[-2:] == (h, w) else y[:, :, :h, :w]


class DepthwiseSeparable(nn.Module):
    """Depthwise conv, then pointwise (1x1) conv.

    With `recompute` (the supernet sets it) the backward pass recomputes the depthwise output
    instead of keeping it: that map is as large as any activation of the op, and the depthwise
    conv is by far its cheapest layer, so this saves ~1/3 of a mixed edge's memory for a few %
    of its time.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.depthwise = DepthwiseConv(c_in, kernel, stride, dilation)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.recompute = False

    @property
    def reads_polyphase(self) -> bool:
        return self.depthwise.reads_polyphase

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.depthwise, x)

    def forward_polyphase(self, x: Polyphase) -> torch.Tensor:
        return self._run(self.depthwise.forward_polyphase, x)

    def _run(self, depthwise: Callable[[Any], torch.Tensor], x: torch.Tensor | Polyphase) -> torch.Tensor:
        def separable(x: torch.Tensor | Polyphase) -> torch.Tensor:
            return self.pointwise(depthwise(x))

        if self.recompute and torch.is_grad_enabled():
            return checkpoint(separable, x, use_reentrant=False)
        return separable(x)


def _separable(c_in: int, c_out: int, kernel: int, stride: int, dilation: int, affine: bool) -> list[nn.Module]:
    return [
        nn.ReLU(),
        DepthwiseSeparable(c_in, c_out, kernel, stride, dilation),
        BatchNorm2d(c_out, affine=affine),
    ]


class DilConv(nn.Sequential):
    """ReLU -> (dilated) depthwise conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int, affine: bool) -> None:
        super().__init__(*_separable(c_in, c_out, kernel, stride, dilation, affine))


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs (as in DARTS); only the first one strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool) -> None:
        super().__init__(
            *_separable(c_in, c_in, kernel, stride, 1, affine), *_separable(c_in, c_out, kernel, 1, 1, affine)
        )


class FacConv(nn.Sequential):
    """ReLU -> conv 1xK -> conv Kx1 -> BN; each conv pads and strides along its own axis only.

    (pt.darts / emoDARTS pad both axes in both convs and stride twice, which grows the map by 6
    at stride 1 and shrinks it 4x at stride 2.)
    """

    def __init__(self, c: int, kernel: int, stride: int, affine: bool) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, (1, kernel), (1, stride), (0, pad), bias=False),
            nn.Conv2d(c, c, (kernel, 1), (stride, 1), (pad, 0), bias=False),
            BatchNorm2d(c, affine=affine),
        )


class _OffsetGridConvs(nn.Module):
    """Two 1x1 convs, on the even pixel grid and on the grid offset by one pixel, concatenated.

    The offset grid is padded by one row and column at the end, so both halves have
    ceil(H / 2) x ceil(W / 2) positions for odd sizes as well (`Polyphase`). The grids are sliced
    out and convolved with stride 1: oneDNN's strided 1x1 conv corrupts the heap in its backward
    pass for fewer than 8 channels (torch 2.13, AVX2), which partial channels produce.
    """

    reads_polyphase = True

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        assert c_out >= 2, f"FactorizedReduce needs at least 2 output channels, got {c_out}"
        self.even = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.odd = nn.Conv2d(c_in, c_out - c_out // 2, 1, bias=False)  # odd c_out: one more here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_polyphase(Polyphase.split(x, POLYPHASE))

    def forward_polyphase(self, x: Polyphase) -> torch.Tensor:
        assert x.grids is not None, "FactorizedReduce reads a split for stride 2"
        even, offset = x.grids
        return torch.cat([self.even(even), self.odd(offset)], dim=1)


class FactorizedReduce(nn.Sequential):
    """ReLU -> halve H and W without losing every other pixel -> BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__(nn.ReLU(), _OffsetGridConvs(c_in, c_out), BatchNorm2d(c_out, affine=affine))


CnnOpFactory = Callable[[int, int, bool], nn.Module]  # (C, stride, affine) -> module

CNN_OPS: dict[str, CnnOpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: PoolBN("max", c, stride, affine),
    "avg_pool_3x3": lambda c, stride, affine: PoolBN("avg", c, stride, affine),
    "skip_connect": lambda c, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, affine),  # 5x5 receptive field
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 2, affine),  # 9x9 receptive field
    "conv_7x1_1x7": lambda c, stride, affine: FacConv(c, 7, stride, affine),
}
assert set(CNN_OPS) == set(CNN_OP_NAMES), "CNN_OPS must implement exactly the ops of the search space"
