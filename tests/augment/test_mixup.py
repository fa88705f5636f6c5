from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nas.train
from nas.augment.mixup import adaptive_acoustic_mixup
from nas.dataset import Examples
from nas.genome import CnnBiLstmAttArchitecture
from nas.models.baseline import build as build_baseline
from nas.recipe import TrainRecipe
from nas.train import TrainConfig, evaluate, fit

# Rows 0-1 and 2-3 are two pairs of similar maps (cosine ~0.95 and ~0.97); rows 4 and 5 are orthogonal to all.
PAIRED = torch.tensor(
    [
        [1.0, 0.2, 0, 0, 0, 0, 0, 0],
        [0.9, -0.1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1.0, 0.3, 0, 0, 0, 0],
        [0, 0, 0.8, 0.1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1.0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0.5, 0.5, 0],
    ]
).reshape(6, 1, 2, 4)
SIMILAR = {(0, 1), (1, 0), (2, 3), (3, 2)}


def _linear(weight: Tensor) -> nn.Module:
    """Logits x.flatten() @ weight.T, so each sample's cross-entropy is known in closed form."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    with torch.no_grad():
        model[1].weight.copy_(weight)
    return model


class _Untouchable(nn.Module):
    def forward(self, *args: Tensor) -> Tensor:
        raise AssertionError("no pair was mixed, so no difficulty is needed")


def _pair_of(target: Tensor) -> tuple[int, ...]:
    """With label i for sample i, a mixed row's soft target is non-zero on exactly its pair's samples."""
    return tuple(torch.nonzero(target > 0).squeeze(1).tolist())


def test_only_pairs_above_the_threshold_are_mixed() -> None:
    y = torch.arange(6)  # one class per sample: the soft target names the pair it came from
    torch.manual_seed(0)
    x, targets, lengths = adaptive_acoustic_mixup(
        _linear(torch.randn(6, 8)), PAIRED, y, None, 6, generator=np.random.default_rng(0)
    )
    assert lengths is None
    assert x.shape == (10, 1, 2, 4)  # the 6 originals and one mix for each of samples 0-3
    assert torch.equal(x[:6], PAIRED) and torch.equal(targets[:6], torch.eye(6))
    pairs = [_pair_of(t) for t in targets[6:]]
    assert {tuple(sorted(p)) for p in pairs} == {(0, 1), (2, 3)} and all(len(p) == 2 for p in pairs)
    assert torch.allclose(targets.sum(1), torch.ones(10))


def test_the_partner_is_drawn_at_random_among_all_similar_samples_and_reproducibly() -> None:
    # Sample 0 has two similar samples (1 and 2); sample 3 is orthogonal to all.
    x = torch.tensor([[1.0, 0, 0], [0.9, 0.2, 0], [0.9, -0.2, 0], [0, 0, 1.0]]).reshape(4, 1, 1, 3)
    model, y = _linear(torch.randn(4, 3)), torch.arange(4)
    partners = set()
    for seed in range(20):
        _, targets, _ = adaptive_acoustic_mixup(model, x, y, None, 4, generator=np.random.default_rng(seed))
        partners.add(_pair_of(targets[4]))  # sample 0's mix comes first
        assert all(3 not in _pair_of(t) for t in targets[4:])
    assert partners == {(0, 1), (0, 2)}
    first = adaptive_acoustic_mixup(model, x, y, None, 4, generator=np.random.default_rng(7))
    again = adaptive_acoustic_mixup(model, x, y, None, 4, generator=np.random.default_rng(7))
    assert all(torch.equal(a, b) for a, b in zip(first[:2], again[:2], strict=True))


def test_lambda_follows_the_difficulty_formula() -> None:
    weight = torch.tensor(
        [
            [2.0, 1.0, 0, 0, 0, 0, 0, 0],
            [0, 0, 3.0, -1.0, 0, 0, 0, 0],
            [-1.0, 0.5, 0.5, 2.0, 1.0, 1.0, 0, 0],
        ]
    )
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    alpha = 2.0
    logits = PAIRED.flatten(1).double() @ weight.double().T
    difficulty = -torch.log_softmax(logits, dim=1)[torch.arange(6), y]  # cross-entropy of each sample
    assert len(set(difficulty.round(decimals=3).tolist())) == 6  # every pair has a real difficulty gap

    x, targets, _ = adaptive_acoustic_mixup(
        _linear(weight), PAIRED, y, None, 3, generator=np.random.default_rng(0), alpha=alpha
    )
    onehot = F.one_hot(y, 3).double()
    for row, (i, j) in enumerate([(0, 1), (1, 0), (2, 3), (3, 2)], start=6):  # one partner each: no choice
        lam = 1 / (1 + np.exp(alpha * float(difficulty[i] - difficulty[j])))
        assert torch.allclose(x[row].double(), lam * PAIRED[i].double() + (1 - lam) * PAIRED[j].double(), atol=1e-6)
        assert torch.allclose(targets[row].double(), lam * onehot[i] + (1 - lam) * onehot[j], atol=1e-6)
        assert float(targets[row].sum()) == pytest.approx(1.0)
    # The harder sample of a pair weighs less (Li et al., 2026, Eq. 3 with alpha > 0).
    easier_of_01 = 0 if difficulty[0] < difficulty[1] else 1
    assert torch.argmax(targets[6 + easier_of_01]) == y[easier_of_01]


def test_a_threshold_above_one_mixes_nothing() -> None:
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x, targets, lengths = adaptive_acoustic_mixup(
        _Untouchable(), PAIRED, y, None, 3, generator=np.random.default_rng(0), threshold=1.01
    )
    assert x is PAIRED and lengths is None
    assert torch.equal(targets, F.one_hot(y, 3).float())


class _MeanOfFrames(nn.Module):
    """Logits from the mean of the real frames: (B, T, D) frames + (B,) lengths -> (B, K)."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, k)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        valid = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        return self.linear(torch.where(valid, x, 0).sum(1) / lengths[:, None])


def test_padding_never_affects_the_similarity_of_frame_sequences() -> None:
    # Real frames: 0 and 1 alike, 2 orthogonal to both. Padding: 0 and 2 alike, 1 opposite; the padded
    # tensors alone would pair 0 with 2 and never with 1.
    lengths = torch.tensor([2, 5, 2])
    x = torch.zeros(3, 6, 3)
    x[0], x[1], x[2] = 50.0, -50.0, 50.0
    x[0, :2] = torch.tensor([1.0, 0.1, 0])
    x[1, :5] = torch.tensor([0.9, 0, 0.1])
    x[2, :2] = torch.tensor([0, 0, 1.0])
    y = torch.arange(3)
    torch.manual_seed(0)
    model = _MeanOfFrames(3, 3)
    out, targets, out_lengths = adaptive_acoustic_mixup(model, x, y, lengths, 3, generator=np.random.default_rng(0))

    assert [_pair_of(t) for t in targets[3:]] == [(0, 1), (0, 1)]  # 0 with 1 and 1 with 0; 2 stays alone
    assert torch.equal(out[:3], x) and out_lengths is not None
    assert out_lengths.tolist() == [2, 5, 2, 5, 5]  # the longer of the two
    lam = float(targets[3, 0])  # sample 0's weight in its mix
    mixed = out[3]
    assert torch.allclose(mixed[:2], lam * x[0, :2] + (1 - lam) * x[1, :2])
    # Past sample 0's end only sample 1's real frames count; past both ends the mix is silent.
    assert torch.allclose(mixed[2:5], (1 - lam) * x[1, 2:5]) and torch.all(mixed[5:] == 0)
    assert torch.equal(out[4], out[3])  # 1 with 0: lambda and 1 - lambda give the same sample


# ---------------------------------------------------------------- the training loop

CLASSES = ("a", "b", "c")
INPUT = (1, 8, 16)


def _maps(n: int, seed: int) -> Examples:
    """Noisy copies of three class patterns that share a common part: pairs within and across classes are
    similar (cosine > 0.7), so AAM mixes some of each."""
    patterns = np.random.default_rng(123).normal(0.0, 1.0, (4, int(np.prod(INPUT))))
    centers = patterns[0] + 0.5 * patterns[1:]
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = centers[y] + rng.normal(0.0, 0.3, (n, centers.shape[1]))
    return Examples(x.reshape(n, *INPUT).astype(np.float32), y)


TRAIN, VAL, TEST = _maps(40, seed=1), _maps(20, seed=2), _maps(20, seed=3)


class _Recorder(nn.Module):
    """A model that logs every forward call: (training mode, gradients on, input)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[bool, bool, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((self.training, torch.is_grad_enabled(), x.detach().clone()))
        return self.inner(x)


def _baseline() -> _Recorder:
    torch.manual_seed(0)
    arch = CnnBiLstmAttArchitecture(conv_channels=(4,), lstm_hidden=8, dense=8, dropout=0.1)
    return _Recorder(build_baseline(arch, INPUT, n_classes=len(CLASSES)))


def _config(**changes: object) -> TrainConfig:
    recipe = TrainRecipe(epochs=3, batch_size=8, optimizer="adam", lr=0.01, schedule="constant", **changes)
    return TrainConfig.of(recipe, seed=4)


def test_fit_with_aam_trains_on_mixed_rows_and_evaluates_on_the_original_rows_only() -> None:
    model = _baseline()
    result = fit(model, TRAIN, VAL, _config(mixup="aam"), classes=CLASSES)
    assert len(result.history) == 3 and all(np.isfinite(e["train_loss"]) for e in result.history)

    steps = [x for training, grad, x in model.calls if training and grad]
    difficulty_passes = [x for training, grad, x in model.calls if training and not grad]
    evaluations = [x for training, _, x in model.calls if not training]
    assert sum(len(x) for x in difficulty_passes) <= 3 * len(TRAIN)
    assert sum(len(x) for x in steps) > 3 * len(TRAIN)  # mixed rows were appended to training batches
    # Each epoch's validation saw exactly the validation rows, in order, and nothing mixed.
    val_x = torch.from_numpy(VAL.x)
    assert torch.equal(torch.cat(evaluations), torch.cat([val_x] * 3))

    model.calls.clear()
    report = evaluate(model, TEST, CLASSES)
    assert torch.equal(torch.cat([x for _, _, x in model.calls]), torch.from_numpy(TEST.x))
    assert evaluate(model, VAL, CLASSES)["ua"] == result.history[result.best_epoch - 1]["val_ua"]
    assert 0.0 <= report["ua"] <= 1.0


def test_a_seeded_aam_run_is_reproducible_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    config = _config(mixup="aam")
    straight = _baseline()
    straight_result = fit(straight, TRAIN, VAL, config, classes=CLASSES)
    again = _baseline()
    assert fit(again, TRAIN, VAL, config, classes=CLASSES).history == straight_result.history

    def crash_after_epoch_1(epoch: int, entry: dict[str, float]) -> None:
        if epoch == 1:
            raise RuntimeError("worker died")

    checkpoint = tmp_path / "fit.pt"
    with pytest.raises(RuntimeError, match="worker died"):
        fit(_baseline(), TRAIN, VAL, config, classes=CLASSES, checkpoint_path=checkpoint, on_epoch=crash_after_epoch_1)
    torch.manual_seed(999)
    resumed = _baseline()
    result = fit(resumed, TRAIN, VAL, config, classes=CLASSES, checkpoint_path=checkpoint)
    assert result.history == straight_result.history
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), f"{key} differs"


def test_without_mixup_training_is_the_integer_target_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # A recipe stored before mixup existed loads with mixup "none" and trains without ever mixing.
    old_recipe = TrainRecipe.model_validate(
        {"epochs": 3, "batch_size": 8, "optimizer": "adam", "lr": 0.01, "schedule": "constant"}
    )
    recorded = fit(_baseline(), TRAIN, VAL, TrainConfig.of(old_recipe, seed=4), classes=CLASSES)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("mixup must not run when the recipe asks for none")

    monkeypatch.setattr(nas.train, "adaptive_acoustic_mixup", never)
    model = _baseline()
    again = fit(model, TRAIN, VAL, _config(mixup="none"), classes=CLASSES)
    assert again.history == recorded.history
    assert all(len(x) <= 8 for training, _, x in model.calls if training)  # batches of original rows only
    monkeypatch.undo()
    # AAM that finds no pair trains on one-hot soft targets: the same loss, up to rounding.
    unmixed = fit(_baseline(), TRAIN, VAL, _config(mixup="aam", mixup_threshold=1.5), classes=CLASSES)
    for entry, expected in zip(unmixed.history, recorded.history, strict=True):
        assert entry == pytest.approx(expected, rel=1e-4, abs=1e-6)
