"""Discrete models built from genomes: one module per family, one wrapper for all.

A family's builder maps (architecture, input shape, n_classes) to a body: maps (B, 1, F, T) ->
logits for the map layout, `(x (B, T, D), lengths (B,))` -> logits for frame sequences. The
wrapper carries the feature scaler fitted on the training speakers as buffers, so saved weights
are everything `predict` needs besides the genome. With the segment protocol (`FeatureSpec.segments`)
the body reads fixed-length windows and the wrapper scores each utterance by the mean of its windows'
class probabilities.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from torch import nn

from nas.data.segments import window_index
from nas.errors import UnknownNameError
from nas.features.spec import Segments
from nas.genome import EnsembleGenome, Genome

_FAMILIES = {
    "emodarts": "nas.models.emodarts:build",
    "cnn-bilstm-att": "nas.models.baseline:build",
    "bigru-head": "nas.models.bigru_head:build",
    "cnn2d-lstm": "nas.models.cnn_lstm:build",
    "cnn1d-lstm": "nas.models.cnn_lstm:build",
    "cnn-lstm-fused": "nas.models.cnn_lstm:build",
    "lstm-cnn": "nas.models.lstm_cnn:build",
    "cnn-transformer": "nas.models.cnn_transformer:build",
    "macnn-icasa": "nas.models.macnn:build",
    "hmoe-simba": "nas.models.hmoe_simba:build",
}


class SerModel(nn.Module):
    def __init__(self, body: nn.Module, n_features: int, frames: bool, segments: Segments | None = None) -> None:
        super().__init__()
        assert segments is None or frames, "segments are windows of frame sequences"
        self.body = body
        self.frames = frames
        self.segments = segments
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        # Divides the scores: 1 while training; fitted on validation afterwards (nas.train.fit_temperature).
        self.register_buffer("temperature", torch.ones(()))

    def set_scaler(self, mean: np.ndarray, std: np.ndarray) -> None:
        assert mean.shape == self.feature_mean.shape, f"scaler mean {mean.shape} != {self.feature_mean.shape}"
        self.feature_mean.copy_(torch.tensor(mean))  # a copy: Ray hands trials read-only arrays
        self.feature_std.copy_(torch.tensor(std))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores (B, K), whose softmax is the class probabilities."""
        return self._scores(x, lengths) / self.temperature

    def _scores(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.frames:
            assert lengths is not None, "frame sequences need their true lengths (B,)"
            x = (x - self.feature_mean) / self.feature_std  # (B, T, D), per feature D; the body masks padding
            if self.segments is not None:
                return self._mean_over_windows(x, lengths)
            return self.body(x, lengths)
        x = (x - self.feature_mean[:, None]) / self.feature_std[:, None]  # (B, 1, F, T), per feature row F
        return self.body(x)

    def _mean_over_windows(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log of the mean of the class probabilities of each sequence's test windows: (B, K).

        A training window (at most one window long) is its own only window, so training on windows sees
        log_softmax(body logits), whose cross-entropy is the body's own."""
        assert self.segments is not None
        b, t, _ = x.shape
        index = window_index(lengths.cpu().numpy(), t, self.segments.frames, self.segments.test_stride)
        rows = torch.from_numpy(index.rows).to(x.device)  # (N,)
        valid = torch.from_numpy(index.valid).to(x.device)  # (N, frames)
        windows = torch.where(valid[..., None], x[rows[:, None], torch.from_numpy(index.positions).to(x.device)], 0)
        log_probs = torch.log_softmax(self.body(windows, torch.from_numpy(index.lengths).to(x.device)), dim=-1)
        counts = torch.bincount(rows, minlength=b)  # (B,) windows per sequence, each >= 1
        within = torch.arange(len(rows), device=x.device) - (torch.cumsum(counts, 0) - counts)[rows]  # (N,)
        # (N, K) -> (B, most windows, K), missing windows at -inf, which logsumexp ignores
        grouped = log_probs.new_full((b, int(counts.max()), log_probs.shape[-1]), float("-inf"))
        grouped[rows, within] = log_probs
        return torch.logsumexp(grouped, dim=1) - torch.log(counts.to(log_probs.dtype))[:, None]

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups: the body's own (e.g. L2 on recurrent weights only), else one group."""
        own = getattr(self.body, "parameter_groups", None)
        if own is not None:
            return own(weight_decay)
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def build_any(genome: Genome | EnsembleGenome) -> nn.Module:
    """An untrained network, or an ensemble of untrained members (load a bundle's weights into it)."""
    if isinstance(genome, EnsembleGenome):
        from nas.models.ensemble import EnsembleModel

        return EnsembleModel([build(member) for member in genome.members], genome.weights)
    return build(genome)


def build(genome: Genome, seed: int | None = None) -> SerModel:
    """An untrained model for the network genome (load a bundle's weights into it).

    With `seed`, its initial weights are drawn from that seed alone, whatever the process did before: a
    trial started in a fresh Ray worker, or run again, starts from the same weights. The process's own
    random state is left as it was.
    """
    family = genome.family
    try:
        module, _, fn = _FAMILIES[family].partition(":")
    except KeyError:
        raise UnknownNameError("model family", family, list(_FAMILIES)) from None
    make_body = getattr(importlib.import_module(module), fn)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        body = make_body(genome.architecture, genome.input.network_shape, len(genome.classes))
    return SerModel(
        body,
        n_features=genome.input.scaled_features,
        frames=genome.input.layout == "frames",
        segments=genome.input.segments,
    )
