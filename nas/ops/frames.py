"""Frame sequences (B, T, D) zero-padded to T, with their true lengths (B,): the checks and masks every
model and batch transform that reads them shares."""

from __future__ import annotations

import torch


def frame_width(input_shape: tuple[int, ...]) -> int:
    """The feature width D of a frame-sequence input shape (T, D), checked."""
    assert len(input_shape) == 2, f"frame sequences need an input_shape (T, D), got {input_shape}"
    t, d = input_shape
    assert t >= 1 and d >= 1, f"input_shape (T, D) must be positive, got {input_shape}"
    return d


def valid_frames(lengths: torch.Tensor, t: int, device: torch.device) -> torch.Tensor:
    """(B, T) bool: which of T padded frames are real, for true lengths (B,)."""
    return torch.arange(t, device=device)[None, :] < lengths.to(device)[:, None]


def check_frames(x: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """`x` is a batch of frame sequences (B, T, D) with D == width and valid `lengths`; returns their
    `valid_frames` mask (B, T)."""
    assert x.dim() == 3, f"expected (B, T, D) frames, got shape {tuple(x.shape)}"
    b, t, d = x.shape
    assert d == width, f"expected frames of width D={width}, got {d}"
    assert lengths.shape == (b,), f"expected lengths of shape ({b},), got {tuple(lengths.shape)}"
    assert not lengths.is_floating_point(), f"lengths must be integer frame counts, got {lengths.dtype}"
    assert bool((lengths >= 1).all()) and bool((lengths <= t).all()), (
        f"every length must lie in 1..T={t}, got min {int(lengths.min())}, max {int(lengths.max())}"
    )
    return valid_frames(lengths, t, x.device)
