"""An ensemble of trained networks: the weighted average of their class probabilities (Serra, LoopQPrize 2022).

Members read different inputs (a log-mel map, MFCC frames), so the ensemble has no single `forward`:
`probabilities` takes one input per member. The members live in one module, so an ensemble saves and
loads as one state dict (`member.<i>.` prefixes), exactly like a single network's bundle.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nas.models import SerModel


class EnsembleModel(nn.Module):
    def __init__(self, members: list[SerModel], weights: tuple[float, ...]) -> None:
        super().__init__()
        assert len(members) == len(weights), f"{len(weights)} weights for {len(members)} members"
        self.member = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float64))

    def mix(self, probabilities: list[np.ndarray]) -> np.ndarray:
        """The weighted average (N, K) of the members' class probabilities, one (N, K) array per member."""
        assert len(probabilities) == len(self.member), f"{len(probabilities)} predictions for {len(self.member)}"
        stacked = np.stack(probabilities)  # (M, N, K)
        return np.einsum("m,mnk->nk", self.weights.cpu().numpy(), stacked)
