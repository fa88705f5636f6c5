"""Adaptive acoustic mixup (AAM) of Li et al. (2026), a similarity- and difficulty-guided mixup (Zhang et al., 2018).

Each training sample is paired with a random partner among the samples of its batch whose features have
cosine similarity above a threshold T (Li et al., 2026, Eq. 1 and Algorithm 1). The interpolation
coefficient comes from the two samples' classification difficulties under the current model, their
per-sample cross-entropies d (Eq. 2): lambda = 1 / (1 + exp(alpha * (d1 - d2))) (Eq. 3), so the easier
sample of a pair weighs more. Features and one-hot labels are mixed with lambda (Eq. 4) and the mixed
samples are appended to the batch, whose original samples stay (Algorithm 1, line 1).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops.frames import valid_frames


def adaptive_acoustic_mixup(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    lengths: Tensor | None,
    n_classes: int,
    *,
    generator: np.random.Generator,
    threshold: float = 0.7,
    alpha: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The batch with its AAM samples appended: (x', soft targets (B + M, n_classes), lengths' or None).

    `x` holds maps (B, C, F, T) or frame sequences (B, T, D) with their true `lengths` (B,); `y` the
    integer labels (B,). The first B rows of the result are the original samples with one-hot targets;
    the M <= B rows after them are the mixed samples, one for every sample that has at least one partner
    with similarity > `threshold` (a threshold above 1 mixes nothing), in the order of those samples; the
    mixed sample of i and its partner j has coefficient lambda on i. The partner is drawn from
    `generator`, so a seeded generator gives a reproducible batch. The difficulties come from one
    forward pass of `model` without gradients, in the mode the model is in (as during training:
    "the model predictions at the current training epoch", Li et al., 2026); in training mode that pass
    draws dropout masks from torch's RNG and moves BatchNorm running statistics, as any forward pass does.
    """
    assert x.shape[0] == y.shape[0], f"x has {x.shape[0]} samples but y has {y.shape[0]}"
    assert lengths is None or lengths.shape == y.shape, "one length per sample"
    onehot = F.one_hot(y, n_classes).to(x.dtype)
    partner = _partners(_similarity(x, lengths), threshold, generator)
    mixed = torch.nonzero(partner >= 0).squeeze(1)
    if len(mixed) == 0:
        return x, onehot, lengths
    first, second = mixed, partner[mixed]

    with torch.no_grad():
        logits = model(x) if lengths is None else model(x, lengths)
        difficulty = F.cross_entropy(logits.float(), y, reduction="none")
    # Eq. 3 of Li et al. (2026) written as a sigmoid: 1 / (1 + exp(a)) = sigmoid(-a).
    lam = torch.sigmoid(-alpha * (difficulty[first] - difficulty[second])).to(x.dtype)

    source = x if lengths is None else torch.where(valid_frames(lengths, x.shape[1], x.device).unsqueeze(-1), x, 0)
    weight = lam.view(-1, *([1] * (x.dim() - 1)))
    x_mixed = weight * source[first] + (1 - weight) * source[second]
    y_mixed = lam[:, None] * onehot[first] + (1 - lam[:, None]) * onehot[second]
    lengths_out = None
    if lengths is not None:
        # The mixed sequence keeps every real frame of the longer one; past the shorter one's end that one
        # adds nothing (its padding was zeroed above), as when mixup (Zhang et al., 2018) mixes inputs that
        # were zero-padded to one size. The shorter length would cut real frames of the longer utterance.
        lengths_out = torch.cat([lengths, torch.maximum(lengths[first], lengths[second])])
    return torch.cat([x, x_mixed]), torch.cat([onehot, y_mixed]), lengths_out


def _similarity(x: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, B) cosine similarity of the samples' feature vectors (Li et al., 2026, Eq. 1).

    A map is compared as its flattened vector. A frame sequence is compared as the mean of its real
    frames: padding never counts, and sequences of different lengths still give vectors of one size.
    A zero vector has similarity 0 with everything.
    """
    with torch.no_grad():
        if lengths is None:
            vectors = x.flatten(1)
        else:
            valid = valid_frames(lengths, x.shape[1], x.device).unsqueeze(-1)
            vectors = torch.where(valid, x, 0).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)
        unit = F.normalize(vectors.double(), dim=1)  # float64: a threshold decision should not hinge on rounding
        return unit @ unit.T


def _partners(similarity: Tensor, threshold: float, generator: np.random.Generator) -> Tensor:
    """(B,) int64: each sample's partner, drawn uniformly among the others above `threshold`; -1 for none.

    Algorithm 1 of Li et al. (2026) draws one partner for every sample, so a pair whose samples draw each
    other is mixed twice, with coefficients lambda and 1 - lambda, which give the same sample; it is kept
    twice as in the algorithm. (The text also speaks of drawing same- and different-emotion pairs "to keep
    a balanced emotional distribution"; the algorithm uses no labels to choose, and neither does this.)
    """
    n = similarity.shape[0]
    candidates = (similarity > threshold) & ~torch.eye(n, dtype=torch.bool, device=similarity.device)
    counts = candidates.sum(1)
    if not bool(counts.any()):
        return torch.full((n,), -1, dtype=torch.int64, device=similarity.device)
    draws = torch.from_numpy(generator.random(n)).to(similarity.device)
    pick = torch.minimum((draws * counts).long(), (counts - 1).clamp(min=0))  # k-th candidate, 0-based
    rank = candidates.long().cumsum(1) - 1
    chosen = (candidates & (rank == pick[:, None])).long().argmax(1)
    return torch.where(counts > 0, chosen, -1)
