"""Where the windows of the segment protocol (`nas.features.spec.Segments`) lie in a batch of frame sequences.

Torch-free and shared: training rows are cut into windows here in numpy, and a segmented model cuts the
utterances it scores with the same index in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowIndex:
    """Windows of `frames` frames over sequences zero-padded to T: window i is row `rows[i]`, frames
    `positions[i]`, of which the first `lengths[i]` are real (`valid[i]`; the rest read as zero)."""

    rows: np.ndarray  # (N,) int64: the sequence each window comes from, in order
    positions: np.ndarray  # (N, frames) int64 in 0..T-1: the frames it reads (clamped where it is padding)
    lengths: np.ndarray  # (N,) int64 in 1..frames: its real frames
    valid: np.ndarray  # (N, frames) bool: which of its frames are real


def window_index(lengths: np.ndarray, t: int, frames: int, stride: int) -> WindowIndex:
    """The windows of sequences of true `lengths`, zero-padded to `t` frames, cut every `stride` frames.

    Starts are 0, stride, 2 stride, ... up to L - frames, plus L - frames itself when the grid misses it, so
    the last window ends at the last real frame; a sequence shorter than `frames` is one window at 0.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    assert frames >= 1 and stride >= 1, f"frames and stride must be positive, got {frames}, {stride}"
    assert lengths.ndim == 1 and bool((lengths >= 1).all()) and bool((lengths <= t).all()), (
        f"lengths must lie in 1..{t}, got {lengths}"
    )
    last = np.maximum(lengths - frames, 0)  # (B,) start of the window that ends at the last frame
    counts = -(-last // stride) + 1  # (B,) the grid's starts up to `last`, then `last` if it is off the grid
    rows = np.repeat(np.arange(len(lengths)), counts)  # (N,)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # (N,) 0, 1, .. per row
    starts = np.minimum(within * stride, last[rows])  # (N,)
    offsets = np.arange(frames)  # (frames,)
    window_lengths = np.minimum(lengths[rows] - starts, frames)  # (N,)
    return WindowIndex(
        rows=rows,
        positions=np.minimum(starts[:, None] + offsets, t - 1),  # (N, frames)
        lengths=window_lengths,
        valid=offsets[None, :] < window_lengths[:, None],  # (N, frames)
    )
