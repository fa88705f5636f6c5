"""What every trial reports: UA, WA, macro-F1, per-class scores, confusion, calibration, cost.

Numpy only at import time: the API and the dashboard read these reports without torch.
Every value returned is a plain Python float/int/list, so a report goes straight to JSON.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

ECE_BINS = 15


CALIBRATION_KEYS = ("ece", "mce", "brier")  # what temperature scaling changes in a report; the argmax never moves


def classification_report(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Scores of predicted class probabilities `probs` (N, K) against integer labels `y_true` (N,).

    - `ua`: mean recall over the classes present in `y_true` (a class absent from a speaker
      fold has no recall; counting it as 0 would punish the model for the split).
    - `wa`: plain accuracy.
    - `macro_f1`: mean F1 over the classes present in `y_true` or predicted (scikit-learn's
      default label set), so predicting a class that never occurs costs F1.
    - `ece` / `mce`: expected / maximum |accuracy - confidence| over 15 equal-width bins of
      the top-class probability, bin i covering (i/15, (i+1)/15].
    - `brier`: mean over samples of the squared distance between `probs` and the one-hot label.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = len(y_true), len(classes)
    assert n > 0, "classification_report needs at least one sample"
    assert y_true.ndim == 1, f"y_true must be 1-D integer labels, got shape {y_true.shape}"
    assert probs.shape == (n, k), f"probs must be (N={n}, K={k}), got {probs.shape}"
    assert np.issubdtype(y_true.dtype, np.integer), f"y_true must hold integer labels, got {y_true.dtype}"
    assert y_true.min() >= 0 and y_true.max() < k, f"labels must lie in 0..{k - 1}, got {y_true.min()}..{y_true.max()}"
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3), "each row of probs must sum to 1 (softmax output)"

    y_pred = probs.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)  # rows: true class, columns: predicted class
    np.add.at(confusion, (y_true, y_pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)

    present = support > 0
    scored = present | (predicted > 0)
    ece, mce = _calibration_errors(probs.max(axis=1), (y_pred == y_true).astype(np.float64))
    onehot = np.eye(k)[y_true]
    return {
        "ua": float(recall[present].mean()),
        "wa": float(tp.sum() / n),
        "macro_f1": float(f1[scored].mean()),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(classes)
        },
        "confusion": confusion.tolist(),
        "ece": ece,
        "mce": mce,
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "n": int(n),
    }


def population_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """`ua`, `wa` and `macro_f1` (each (P,), defined as in `classification_report`) of P predictions at once.

    `y_pred` (P, N) holds P candidates' predicted labels of the same N samples (a genetic algorithm's
    population): one pass of array arithmetic, no Python loop over candidates.
    """
    y_true = np.asarray(y_true)
    assert y_pred.ndim == 2 and y_pred.shape[1] == len(y_true), (
        f"y_pred must be (P, N={len(y_true)}), got {y_pred.shape}"
    )
    truth = np.eye(k, dtype=bool)[y_true]  # (N, K)
    guess = np.eye(k, dtype=bool)[y_pred]  # (P, N, K)
    tp = (guess & truth).sum(axis=1).astype(np.float64)  # (P, K)
    support = truth.sum(axis=0)  # (K,)
    predicted = guess.sum(axis=1)  # (P, K)
    present = support > 0
    recall = tp[:, present] / support[present]
    f1 = np.divide(2 * tp, predicted + support, out=np.zeros_like(tp), where=(predicted + support) > 0)
    scored = present | (predicted > 0)  # (P, K): sklearn's label set, per candidate
    return {
        "ua": recall.mean(axis=1),
        "wa": tp.sum(axis=1) / len(y_true),
        "macro_f1": (f1 * scored).sum(axis=1) / scored.sum(axis=1),
    }


def _calibration_errors(confidence: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    # ceil(c * B) - 1 puts c in (i/B, (i+1)/B] into bin i; confidence 0 joins the first bin.
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    ece, mce = 0.0, 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        gap = abs(float(correct[in_bin].mean()) - float(confidence[in_bin].mean()))
        ece += gap * in_bin.mean()
        mce = max(mce, gap)
    return float(ece), float(mce)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the number the papers report as model size)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str = "cpu",
    warmup: int = 10,
    runs: int = 50,
    frames: bool = False,
) -> dict[str, float]:
    """Inference latency of one example (batch 1) of shape `input_shape`: a map (1, F, T), or a
    whole frame sequence (T, D) when `frames` (the model then takes its length too).

    The model must already be on `device`. Papers' latency tables use 100 warm-up and 1000
    timed runs; the defaults are smaller so trials stay cheap, pass those for a paper table.
    """
    import torch

    assert warmup >= 0 and runs >= 1, f"need warmup >= 0 and runs >= 1, got {warmup}, {runs}"
    x = torch.randn(1, *input_shape, device=device)
    inputs = (x, torch.tensor([input_shape[0]], device=device)) if frames else (x,)
    cuda = torch.device(device).type == "cuda"
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(*inputs)
            if cuda:  # kernels run asynchronously: wait for them before reading the clock
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return {"latency_ms_p50": float(np.median(times)), "latency_ms_mean": float(np.mean(times))}


def mean_std(reports: Sequence[Mapping[str, float]], keys: Iterable[str]) -> dict[str, float]:
    """`<key>_mean` and `<key>_std` (population std, as papers report over folds) of each key."""
    assert reports, "mean_std needs at least one report"
    summary: dict[str, float] = {}
    for key in keys:
        missing = [i for i, r in enumerate(reports) if key not in r]
        if missing:
            raise KeyError(f"metric {key!r} is missing from reports {missing}")
        values = [float(r[key]) for r in reports]
        summary[f"{key}_mean"] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.pstdev(values)
    return summary
