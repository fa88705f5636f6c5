from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas.errors import ConfigError, SearchCancelled
from nas.train import FitResult, TrainConfig, evaluate, fit, iterate_batches, predict_proba, resolve_device

CLASSES = ("a", "b", "c")


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs, shaped like (N, 1, F, T) feature maps."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(0.0, 2.0, (3, 8))
    y = rng.integers(0, 3, n)
    x = centers[y] + rng.normal(0.0, 0.5, (n, 8))
    return x.reshape(n, 1, 2, 4).astype(np.float32), y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # Dropout makes the result depend on the torch RNG, which resuming must restore.
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


TRAIN, VAL = _data(60, seed=1), _data(30, seed=2)


class Crash(Exception):
    """Stands in for a worker dying between epochs."""


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs"


def test_fit_learns_a_separable_problem() -> None:
    model = _model()
    config = TrainConfig(epochs=15, optimizer="adam", lr=0.01, schedule="constant")
    result = fit(model, TRAIN, VAL, config, classes=CLASSES)
    assert len(result.history) == 15 and not result.stopped_early
    assert set(result.history[0]) == {"train_loss", "train_acc", "val_loss", "val_ua", "val_wa", "lr"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    report = evaluate(model, *VAL, CLASSES)
    assert report["ua"] >= 0.9
    assert report["ua"] == result.history[result.best_epoch - 1]["val_ua"]  # best weights were restored
    probs = predict_proba(model, VAL[0], batch_size=7)
    assert probs.shape == (30, 3) and np.allclose(probs.sum(axis=1), 1.0)


def test_without_validation_the_last_epoch_is_kept() -> None:
    result = fit(_model(), TRAIN, None, TrainConfig(epochs=3, patience=1), classes=CLASSES)
    assert result.best_epoch == 3 and not result.stopped_early
    assert set(result.history[0]) == {"train_loss", "train_acc", "lr"}


def test_cosine_schedule_is_recorded_per_epoch() -> None:
    config = TrainConfig(epochs=4, lr=0.1, lr_min=0.01)
    lrs = [entry["lr"] for entry in fit(_model(), TRAIN, None, config, classes=CLASSES).history]
    expected = [0.01 + 0.09 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    assert lrs == pytest.approx(expected)


def _straight_run(config: TrainConfig) -> tuple[nn.Module, FitResult]:
    model = _model()
    return model, fit(model, TRAIN, VAL, config, classes=CLASSES)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    config = TrainConfig(epochs=4, batch_size=16)
    straight, straight_result = _straight_run(config)

    def crash_after_epoch_2(epoch: int, entry: dict[str, float]) -> None:
        if epoch == 2:
            raise Crash

    checkpoint = tmp_path / "fit.pt"
    with pytest.raises(Crash):
        fit(
            _model(),
            TRAIN,
            VAL,
            config,
            classes=CLASSES,
            checkpoint_path=checkpoint,
            on_epoch=crash_after_epoch_2,
        )
    torch.manual_seed(999)  # a new process would start from other global RNG states
    np.random.seed(999)

    reported: list[tuple[int, dict[str, float]]] = []
    resumed = _model(seed=42)  # a different init: everything must come from the checkpoint
    result = fit(
        resumed,
        TRAIN,
        VAL,
        config,
        classes=CLASSES,
        checkpoint_path=checkpoint,
        on_epoch=lambda epoch, entry: reported.append((epoch, entry)),
    )
    # epoch 2 was checkpointed but its report crashed: the restored epochs are reported again
    assert [epoch for epoch, _ in reported] == [1, 2, 3, 4]
    assert [entry for _, entry in reported] == result.history
    assert result.history == straight_result.history
    assert result.best_epoch == straight_result.best_epoch
    _assert_same_weights(resumed, straight)


def test_cancellation_raises_and_keeps_the_last_epoch_checkpoint(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=16)  # 60 examples: 4 batches per epoch
    calls = 0

    def cancel_in_epoch_2() -> bool:
        nonlocal calls
        calls += 1
        return calls == 6

    checkpoint = tmp_path / "fit.pt"
    with pytest.raises(SearchCancelled, match="epoch 2"):
        fit(
            _model(),
            TRAIN,
            VAL,
            config,
            classes=CLASSES,
            checkpoint_path=checkpoint,
            is_cancelled=cancel_in_epoch_2,
        )
    assert len(torch.load(checkpoint, weights_only=True)["history"]) == 1
    assert not checkpoint.with_name("fit.pt.tmp").exists()

    resumed = _model()
    result = fit(resumed, TRAIN, VAL, config, classes=CLASSES, checkpoint_path=checkpoint)
    straight, straight_result = _straight_run(config)
    assert result.history == straight_result.history
    _assert_same_weights(resumed, straight)


def test_resuming_with_another_config_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "fit.pt"
    fit(_model(), TRAIN, None, TrainConfig(epochs=1), classes=CLASSES, checkpoint_path=checkpoint)
    with pytest.raises(ConfigError, match="lr"):
        fit(_model(), TRAIN, None, TrainConfig(epochs=1, lr=0.5), classes=CLASSES, checkpoint_path=checkpoint)


def test_early_stopping_restores_the_best_epoch() -> None:
    # Validation labels are shifted, so the better the model learns TRAIN the worse its validation UA.
    val = (VAL[0], (VAL[1] + 1) % 3)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    model = _model()

    def snapshot(epoch: int, entry: dict[str, float]) -> None:
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    config = TrainConfig(epochs=40, optimizer="adam", lr=0.05, schedule="constant", patience=3)
    result = fit(model, TRAIN, val, config, classes=CLASSES, on_epoch=snapshot)

    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 3
    expected_best = max(
        range(len(result.history)),
        key=lambda i: (result.history[i]["val_ua"], -result.history[i]["val_loss"]),
    )
    assert result.best_epoch == expected_best + 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[result.best_epoch][key]), f"{key} is not the best epoch's"


def test_iterate_batches_keeps_the_last_partial_batch() -> None:
    x, y = np.zeros((10, 1, 2, 2), dtype=np.float64), np.arange(10)
    batches = list(iterate_batches(x, y, 4, shuffle=True, generator=np.random.default_rng(0), device="cpu"))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    assert batches[0][0].dtype == torch.float32 and batches[0][1].dtype == torch.int64
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == list(range(10))


def test_config_and_device_errors_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="valid devices"):
        resolve_device("tpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
