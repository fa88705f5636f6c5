from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas.dataset import Examples
from nas.errors import ConfigError, SearchCancelled
from nas.recipe import TrainRecipe
from nas.train import FitResult, TrainConfig, evaluate, fit, iterate_batches, predict_proba, resolve_device

CLASSES = ("a", "b", "c")


def _data(n: int, seed: int) -> Examples:
    """Three well-separated Gaussian blobs, shaped like (N, 1, F, T) feature maps."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(123).normal(0.0, 2.0, (3, 8))
    y = rng.integers(0, 3, n)
    x = centers[y] + rng.normal(0.0, 0.5, (n, 8))
    return Examples(x.reshape(n, 1, 2, 4).astype(np.float32), y)


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
    assert set(result.history[0]) == {"train_loss", "train_acc", "val_loss", "val_ua", "val_wa", "val_macro_f1", "lr"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    report = evaluate(model, VAL, CLASSES)
    assert report["ua"] >= 0.9
    assert report["ua"] == result.history[result.best_epoch - 1]["val_ua"]  # best weights were restored
    assert report["macro_f1"] == result.history[result.best_epoch - 1]["val_macro_f1"]
    probs = predict_proba(model, VAL.x, batch_size=7)
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


def test_a_checkpoint_from_before_mixup_existed_resumes_and_a_changed_mixup_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=16)
    checkpoint = tmp_path / "fit.pt"

    def crash_after_epoch_1(epoch: int, entry: dict[str, float]) -> None:
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(_model(), TRAIN, VAL, config, classes=CLASSES, checkpoint_path=checkpoint, on_epoch=crash_after_epoch_1)
    state = torch.load(checkpoint, weights_only=True)
    for key in ("mixup", "mixup_threshold", "mixup_alpha"):  # as written before these settings existed
        del state["config"][key]
    torch.save(state, checkpoint)
    with pytest.raises(ConfigError, match="mixup"):
        fit(
            _model(),
            TRAIN,
            VAL,
            TrainConfig(epochs=3, batch_size=16, mixup="aam"),
            classes=CLASSES,
            checkpoint_path=checkpoint,
        )

    resumed = _model()
    result = fit(resumed, TRAIN, VAL, config, classes=CLASSES, checkpoint_path=checkpoint)
    straight, straight_result = _straight_run(config)
    assert result.history == straight_result.history
    _assert_same_weights(resumed, straight)


def test_early_stopping_restores_the_best_epoch() -> None:
    # Validation labels are shifted, so the better the model learns TRAIN the worse its validation UA.
    val = Examples(VAL.x, (VAL.y + 1) % 3)
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


def test_monitoring_the_loss_keeps_the_lowest_validation_loss_epoch() -> None:
    val = Examples(VAL.x, (VAL.y + 1) % 3)  # learning TRAIN makes the validation loss worse
    config = TrainConfig(epochs=12, optimizer="adam", lr=0.05, schedule="constant", patience=3, monitor="val_loss")
    result = fit(_model(), TRAIN, val, config, classes=CLASSES)
    losses = [entry["val_loss"] for entry in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    if result.stopped_early:
        assert len(result.history) == result.best_epoch + 3
    with pytest.raises(ConfigError, match="monitor"):
        TrainConfig(epochs=1, monitor="val_wa")


def test_a_recipe_becomes_the_loops_config() -> None:
    recipe = TrainRecipe(epochs=7, batch_size=8, optimizer="adamw", lr=1e-3, patience=2, monitor="val_loss")
    config = TrainConfig.of(recipe, seed=5)
    assert (config.epochs, config.batch_size, config.optimizer, config.lr) == (7, 8, "adamw", 1e-3)
    assert (config.patience, config.monitor, config.seed) == (2, "val_loss", 5)
    assert {k: getattr(config, k) for k in TrainRecipe.model_fields} == recipe.model_dump()


def test_iterate_batches_keeps_the_last_partial_batch() -> None:
    examples = Examples(np.zeros((10, 1, 2, 2), dtype=np.float64), np.arange(10))
    batches = list(iterate_batches(examples, 4, shuffle=True, generator=np.random.default_rng(0), device="cpu"))
    assert [len(yb) for _, yb, _ in batches] == [4, 4, 2]
    assert batches[0][0].dtype == torch.float32 and batches[0][1].dtype == torch.int64
    assert all(lb is None for _, _, lb in batches)  # maps carry no lengths
    assert sorted(torch.cat([yb for _, yb, _ in batches]).tolist()) == list(range(10))


def test_frame_batches_carry_their_lengths_and_are_cut_to_the_longest() -> None:
    lengths = np.array([2, 5, 3, 1, 4])
    x = np.zeros((5, 6, 3), dtype=np.float32)  # (N, T, D), zero-padded to T = 6
    for i, n in enumerate(lengths):
        x[i, :n] = i + 1
    batches = list(iterate_batches(Examples(x, np.arange(5), lengths), 2, shuffle=False, generator=None, device="cpu"))
    assert [tuple(xb.shape) for xb, _, _ in batches] == [(2, 5, 3), (2, 3, 3), (1, 4, 3)]
    assert [lb.tolist() for _, _, lb in batches] == [[2, 5], [3, 1], [4]]
    assert batches[0][2].dtype == torch.int64
    xb = batches[0][0]
    assert torch.all(xb[0, :2] == 1) and torch.all(xb[0, 2:] == 0)  # the padding stays zero


class _MeanOfFrames(nn.Module):
    """Mean of the true frames of each sequence: the logits depend on the lengths, not on the padding."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        return self.linear((x * mask).sum(1) / lengths[:, None])


def test_frame_sequences_train_and_predict_with_their_lengths() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    lengths = rng.integers(2, 9, 48)
    x = np.zeros((48, 8, 3), dtype=np.float32)
    for i, (label, n) in enumerate(zip(y, lengths, strict=True)):
        x[i, :n] = np.eye(3)[label] * 3 + rng.normal(0, 0.3, (n, 3))
        x[i, n:] = 100.0 * (1 - 2 * (label % 2))  # padding that would mislead a model reading it
    examples = Examples(x, y, lengths)
    torch.manual_seed(0)
    model = _MeanOfFrames()
    config = TrainConfig(epochs=30, optimizer="adam", lr=0.05, schedule="constant")
    fit(model, examples, examples, config, classes=CLASSES)
    assert evaluate(model, examples, CLASSES)["ua"] >= 0.9
    probs = predict_proba(model, x, lengths, batch_size=5)
    assert probs.shape == (48, 3) and np.allclose(probs.sum(axis=1), 1.0)


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


def _batch_statistics(model: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean over TRAIN's batches (in order) of the batch means and unbiased variances entering model[2]."""
    with torch.no_grad():
        batches = [
            model[1](model[0](xb))
            for xb, _, _ in iterate_batches(TRAIN, 16, shuffle=False, generator=None, device="cpu")
        ]
    return torch.stack([b.mean(0) for b in batches]).mean(0), torch.stack([b.var(0) for b in batches]).mean(0)


def _batch_norm_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_precise_bn_replaces_running_statistics_by_the_average_over_training_batches() -> None:
    """With precise_bn the model ends with the BatchNorm statistics of its final weights, not a lagging average."""
    config = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=0.05)
    model = _batch_norm_model()
    fit(model, TRAIN, None, dataclasses.replace(config, precise_bn=True), classes=CLASSES)
    mean, var = _batch_statistics(model)
    assert torch.allclose(model[2].running_mean, mean, atol=1e-6)
    assert torch.allclose(model[2].running_var, var, atol=1e-5)
    assert model[2].momentum == 0.1  # the layer's own momentum is back

    lagging = _batch_norm_model()
    fit(lagging, TRAIN, None, config, classes=CLASSES)
    assert not torch.allclose(lagging[2].running_mean, _batch_statistics(lagging)[0], atol=1e-3)


def test_temperature_scaling_recovers_the_overconfidence_of_a_model_and_never_moves_its_argmax() -> None:
    from nas.models import SerModel
    from nas.train import fit_temperature

    rng = np.random.default_rng(0)
    n, overconfidence = 4000, 3.0
    x = rng.normal(0.0, 1.0, (n, 1, 2, 4)).astype(np.float32)
    weights = rng.normal(0.0, 1.0, (3, 8))
    true_logits = x.reshape(n, 8) @ weights.T
    true_probs = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true_probs])  # labels drawn from the true probabilities
    body = nn.Sequential(nn.Flatten(), nn.Linear(8, 3, bias=False))
    with torch.no_grad():
        body[1].weight.copy_(torch.tensor(weights * overconfidence))  # its scores: 3x the true logits
    model = SerModel(body, n_features=2, frames=False)
    examples = Examples(x, y)
    before = predict_proba(model, x)

    temperature = fit_temperature(model, examples)

    after = predict_proba(model, x)
    assert temperature == pytest.approx(overconfidence, rel=0.1) and float(model.temperature) == temperature
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1)), "the predicted class never changes"
    nll = [float(-np.log(p[np.arange(n), y]).mean()) for p in (before, after)]
    assert nll[1] < nll[0]
    assert "temperature" in model.state_dict(), "the temperature travels with the weights"
