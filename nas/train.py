"""The one training/evaluation loop every strategy uses.

`fit` trains with cross-entropy, selects the epoch with the best monitored validation value
(UA, ties going to the lower loss; or the loss), stops early on `patience`, checkpoints after every
epoch and resumes from that checkpoint bit-for-bit: a run interrupted after epoch k and resumed
ends with exactly the weights and history of an uninterrupted run (on CPU). Inputs are maps
(N, 1, F, T), or frame sequences (N, T, D) with their true lengths, which reach the model.
With `mixup="aam"` every training batch gets adaptive acoustic mixup (Li et al., 2026) and the loss is
the cross-entropy against soft targets; validation and test batches are never mixed.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.augment.mixup import adaptive_acoustic_mixup
from nas.dataset import Examples
from nas.errors import ConfigError, SearchCancelled
from nas.metrics import classification_report
from nas.recipe import TrainRecipe

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 16
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    lr: float = 0.025
    lr_min: float = 0.0  # cosine schedule's final lr
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = 10  # step schedule: multiply the lr by gamma every step_size epochs
    gamma: float = 0.9
    momentum: float = 0.9  # SGD only; Adam's betas and RMSprop keep PyTorch's defaults
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0  # max global grad norm; None: no clipping
    patience: int | None = None  # epochs without a better validation UA before stopping
    seed: int = 0
    amp: bool = True  # mixed precision on CUDA only; CPU always trains in float32
    monitor: Literal["val_ua", "val_loss"] = "val_ua"  # picks the best epoch and runs out the patience
    precise_bn: bool = False  # recompute BatchNorm statistics with each epoch's final weights
    mixup: Literal["none", "aam"] = "none"  # training batches only; see nas.augment.mixup
    mixup_threshold: float = 0.7  # aam: cosine similarity a pair must exceed
    mixup_alpha: float = 2.0  # aam: sensitivity of lambda to the difficulty difference

    @classmethod
    def of(cls, recipe: TrainRecipe, seed: int) -> TrainConfig:
        """The loop's settings for a genome's recipe."""
        return cls(**recipe.model_dump(), seed=seed)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam", "adamw", "rmsprop"):
            problems.append(f"optimizer must be one of sgd, adam, adamw, rmsprop, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            problems.append(f"schedule must be one of cosine, step, constant, got {self.schedule!r}")
        if self.lr < 0 or self.lr_min < 0:
            problems.append(f"lr and lr_min must be >= 0, got {self.lr}, {self.lr_min}")
        if self.step_size < 1:
            problems.append(f"step_size must be >= 1, got {self.step_size}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be >= 1 or None, got {self.patience}")
        if self.monitor not in ("val_ua", "val_loss"):
            problems.append(f"monitor must be val_ua or val_loss, got {self.monitor!r}")
        if self.mixup not in ("none", "aam"):
            problems.append(f"mixup must be none or aam, got {self.mixup!r}")
        if not np.isfinite(self.mixup_threshold):
            problems.append(f"mixup_threshold must be finite, got {self.mixup_threshold}")
        if not (np.isfinite(self.mixup_alpha) and self.mixup_alpha >= 0):
            problems.append(f"mixup_alpha must be finite and >= 0, got {self.mixup_alpha}")
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))


@dataclass
class FitResult:
    best_epoch: int  # 1-based; the model holds this epoch's weights when fit returns
    history: list[dict[str, float]]  # one entry per finished epoch
    stopped_early: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def resolve_device(preference: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; "cpu", "cuda" and "cuda:N" are checked."""
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return "cpu"
    if preference == "cuda" or preference.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {preference!r} requested but no CUDA GPU is visible to this process; "
                "use device 'cpu' or 'auto', or check the driver and CUDA_VISIBLE_DEVICES"
            )
        index = preference.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(
                f"device {preference!r} does not exist; {torch.cuda.device_count()} GPU(s) are visible "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return preference
    raise ConfigError(f"unknown device {preference!r}; valid devices: auto, cpu, cuda, cuda:N")


def iterate_batches(
    examples: Examples,
    batch_size: int,
    *,
    shuffle: bool,
    generator: np.random.Generator | None,
    device: str,
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Mini-batches (float32 x, int64 y, int64 lengths or None) on `device`; the last partial batch is kept.

    Frame sequences are cut to the longest sequence of the batch: less padding to mask and compute.
    """
    assert batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"
    assert not shuffle or generator is not None, "shuffling needs a generator (for reproducible order)"
    order = generator.permutation(len(examples)) if shuffle else np.arange(len(examples))
    for start in range(0, len(examples), batch_size):
        index = order[start : start + batch_size]
        x = examples.x[index]
        lb = None
        if examples.lengths is not None:
            lengths = examples.lengths[index]
            x = x[:, : int(lengths.max())]  # (B, T, D) -> (B, T_batch, D)
            lb = torch.from_numpy(np.asarray(lengths, dtype=np.int64)).to(device)
        xb = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yb = torch.from_numpy(np.asarray(examples.y[index], dtype=np.int64))
        yield xb.to(device), yb.to(device), lb


def fit(
    model: nn.Module,
    train: Examples,
    validation: Examples | None,
    config: TrainConfig,
    *,
    classes: Sequence[str],
    device: str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    checkpoint_path: Path | None = None,
    progress: bool = False,
) -> FitResult:
    """Train `model` in place; on return it holds the best epoch's weights.

    Without validation the last epoch counts as best and `patience` is ignored.
    `on_epoch(epoch, entry)` is called after each epoch (1-based) once its checkpoint is
    written, and again on resume for every epoch restored from the checkpoint: a kill between
    the two loses no report (reporters key steps by epoch, so a re-report overwrites). An
    exception raised by `on_epoch` (e.g. `optuna.TrialPruned` from a pruner's verdict) stops
    training cleanly after that epoch's checkpoint and propagates. `is_cancelled` is polled
    before every batch and turns into `SearchCancelled`, leaving the checkpoint of the last
    finished epoch in place.
    """
    assert len(train) > 0, "fit needs at least one training example"
    classes = tuple(classes)
    model.to(device)
    seed_everything(config.seed)
    batches = np.random.default_rng(config.seed)  # shuffling order, saved in every checkpoint

    # A SerModel names its own groups (e.g. L2 on recurrent weights only); a bare module trains as one group.
    groups = model.parameter_groups(config.weight_decay) if hasattr(model, "parameter_groups") else None
    optimizer = _optimizer(groups or [{"params": [p for p in model.parameters() if p.requires_grad]}], config)
    scheduler = _scheduler(optimizer, config)
    amp_dtype = _amp_dtype(device, config)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=amp_dtype == torch.float16)

    history: list[dict[str, float]] = []
    best_epoch, best_key, best_state = 0, (-np.inf, -np.inf), None  # larger is better, see _monitored
    stopped_early = False
    if checkpoint_path is not None and checkpoint_path.exists():
        state = _load_checkpoint(checkpoint_path, config, classes)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, stopped_early = state["history"], state["stopped_early"]
        best_epoch, best_key, best_state = state["best_epoch"], tuple(state["best_key"]), state["best_state"]
        _set_rng_states(state["rng"], batches)
        if on_epoch is not None:
            for epoch, entry in enumerate(history, start=1):
                on_epoch(epoch, dict(entry))

    last_epoch = len(history) if stopped_early else config.epochs  # a finished run trains no further
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="train", unit="epoch", initial=len(history), total=config.epochs)
    try:
        for epoch in range(len(history) + 1, last_epoch + 1):
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_acc = _train_epoch(
                model,
                train,
                config=config,
                optimizer=optimizer,
                scaler=scaler,
                amp_dtype=amp_dtype,
                batches=batches,
                device=device,
                is_cancelled=is_cancelled,
                epoch=epoch,
                n_classes=len(classes),
            )
            scheduler.step()
            if config.precise_bn:
                recompute_batch_norm(model, train, config.batch_size, device)
            entry = {"train_loss": train_loss, "train_acc": train_acc}
            if validation is None:
                best_epoch = epoch
            else:
                report = evaluate(model, validation, classes, device)
                entry |= {
                    "val_loss": report["loss"],
                    "val_ua": report["ua"],
                    "val_wa": report["wa"],
                    "val_macro_f1": report["macro_f1"],
                }
                key = _monitored(config, report)
                if key > best_key:
                    best_epoch, best_key = epoch, key
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                patience_over = config.patience is not None and epoch - best_epoch >= config.patience
                stopped_early = patience_over and epoch < config.epochs
            entry["lr"] = float(lr)
            history.append(entry)
            if checkpoint_path is not None:
                state = {
                    "version": CHECKPOINT_VERSION,
                    "config": dataclasses.asdict(config),
                    "classes": list(classes),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                    "stopped_early": stopped_early,
                    "best_epoch": best_epoch,
                    "best_key": list(best_key),
                    "best_state": best_state,
                    "rng": _rng_states(batches),
                }
                _save_checkpoint(checkpoint_path, state)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items()}, refresh=False)
                bar.update()
            if on_epoch is not None:
                on_epoch(epoch, dict(entry))
            if stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch=best_epoch, history=history, stopped_early=stopped_early)


def recompute_batch_norm(model: nn.Module, train: Examples, batch_size: int, device: str) -> None:
    """Precise BN (Wu & Johnson, 2021, "Rethinking 'Batch' in BatchNorm"): replace every BatchNorm layer's
    running statistics by the average of its batch statistics over the training rows, in order, under the
    current weights. Everything else runs as in evaluation (no dropout, no randomness drawn)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch counts the same
        norm.train()
    with torch.no_grad():
        for xb, _, lb in iterate_batches(train, batch_size, shuffle=False, generator=None, device=device):
            model(xb) if lb is None else model(xb, lb)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


def _monitored(config: TrainConfig, report: dict[str, Any]) -> tuple[float, float]:
    """The best epoch's key, larger is better: UA then lower loss, or lower loss then UA."""
    if config.monitor == "val_loss":
        return -report["loss"], report["ua"]
    return report["ua"], -report["loss"]


def _train_epoch(
    model: nn.Module,
    train: Examples,
    *,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    batches: np.random.Generator,
    device: str,
    is_cancelled: Callable[[], bool] | None,
    epoch: int,
    n_classes: int,
) -> tuple[float, float]:
    """(mean loss over the rows trained on, mixed rows included; accuracy over the original rows)."""
    model.train()
    total_loss, rows, correct = 0.0, 0, 0
    for xb, yb, lb in iterate_batches(train, config.batch_size, shuffle=True, generator=batches, device=device):
        if is_cancelled is not None and is_cancelled():
            raise SearchCancelled(
                f"training cancelled during epoch {epoch}; the checkpoint, if any, keeps the "
                f"{epoch - 1} finished epoch(s) and a new fit call resumes from it"
            )
        targets: Tensor = yb
        if config.mixup == "aam":
            # Outside autocast: the similarities and difficulties that pick and weigh pairs stay in float32.
            # Pairing draws from `batches`, which the checkpoint saves, so a resumed run mixes the same pairs.
            xb, targets, lb = adaptive_acoustic_mixup(
                model,
                xb,
                yb,
                lb,
                n_classes,
                generator=batches,
                threshold=config.mixup_threshold,
                alpha=config.mixup_alpha,
            )
        autocast = torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        with autocast:
            logits = model(xb) if lb is None else model(xb, lb)
            # Integer targets without mixup, class probabilities with it: both are F.cross_entropy.
            loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(targets)
        rows += len(targets)
        correct += int((logits[: len(yb)].argmax(dim=1) == yb).sum())
    return total_loss / rows, correct / len(train)


def predict_proba(
    model: nn.Module, x: np.ndarray, lengths: np.ndarray | None = None, device: str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """Class probabilities (N, K) in eval mode."""
    examples = Examples(x, np.zeros(len(x), dtype=np.int64), lengths)
    return _softmax(_predict_logits(model, examples, device, batch_size))


def numerics() -> dict[str, Any]:
    """What a run's figures depend on bit for bit besides its spec and data. CPU kernels are deterministic
    for one build and one intra-op thread count, but reductions split differently over another count: the
    same CNN after 10 Adam steps from one seed has other weights with 1 thread than with 2 (loss 1.76031590
    against 1.76032579), and early stopping on a few validation speakers turns that into other figures."""
    import platform

    return {
        "torch": torch.__version__,
        "intra_op_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def fit_temperature(model: nn.Module, examples: Examples, device: str = "cpu") -> float:
    """Temperature scaling (Guo et al., 2017): the one scalar T that minimises the cross-entropy of
    softmax(scores / T) on `examples` (validation rows), set as the model's temperature and returned. The
    predicted class never changes; confidence shrinks (T > 1) or grows (T < 1) to match accuracy. The
    cross-entropy is convex in 1 / T, so L-BFGS over log T finds its minimum from T = 1."""
    assert isinstance(model.temperature, Tensor), "a model with a temperature buffer (SerModel)"
    scores = torch.from_numpy(_predict_logits(model, examples, device, batch_size=64)) * float(model.temperature)
    labels = torch.from_numpy(np.asarray(examples.y, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(scores / log_t.exp(), labels)
        value.backward()
        return value

    optimizer.step(loss)
    model.temperature.fill_(float(log_t.detach().exp()))
    return float(model.temperature)


def evaluate(model: nn.Module, examples: Examples, classes: Sequence[str], device: str = "cpu") -> dict[str, Any]:
    """`classification_report` of the model on the examples, plus its mean cross-entropy `loss`."""
    logits = _predict_logits(model, examples, device, batch_size=64)
    y = np.asarray(examples.y, dtype=np.int64)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))
    return classification_report(y, _softmax(logits), classes) | {"loss": float(loss)}


def _predict_logits(model: nn.Module, examples: Examples, device: str, batch_size: int) -> np.ndarray:
    assert len(examples) > 0, "nothing to predict: no examples"
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = [
            (model(xb) if lb is None else model(xb, lb)).float().cpu()
            for xb, _, lb in iterate_batches(examples, batch_size, shuffle=False, generator=None, device=device)
        ]
    model.train(was_training)
    return torch.cat(logits).numpy().astype(np.float64)  # float64: softmax and loss without rounding noise


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over parameter groups; a group without its own weight decay takes the config's."""
    match config.optimizer:
        case "sgd":
            return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        case "adam":
            return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
        case "adamw":
            return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        case "rmsprop":
            return torch.optim.RMSprop(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise AssertionError(f"unreachable: optimizer {config.optimizer!r} passed TrainConfig validation")


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    # Stepped once per epoch, so the lr recorded in the history is the one the epoch trained with.
    match config.schedule:
        case "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, eta_min=config.lr_min)
        case "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, gamma=config.gamma)
        case "constant":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise AssertionError(f"unreachable: schedule {config.schedule!r} passed TrainConfig validation")


def _amp_dtype(device: str, config: TrainConfig) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16 with a GradScaler; None on CPU."""
    if not config.amp or torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------- checkpoints


def _rng_states(batches: np.random.Generator) -> dict[str, Any]:
    legacy = np.random.get_state(legacy=False)
    # Only plain types and tensors, so the checkpoint loads with torch.load(weights_only=True).
    legacy["state"] = {"key": legacy["state"]["key"].tolist(), "pos": legacy["state"]["pos"]}
    return {
        "python": random.getstate(),
        "numpy": legacy,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": batches.bit_generator.state,
    }


def _set_rng_states(states: dict[str, Any], batches: np.random.Generator) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    legacy = dict(states["numpy"])
    legacy["state"] = {
        "key": np.asarray(legacy["state"]["key"], dtype=np.uint32),
        "pos": legacy["state"]["pos"],
    }
    np.random.set_state(legacy)
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    batches.bit_generator.state = states["batches"]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file, then rename: a crash mid-write never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, config: TrainConfig, classes: tuple[str, ...]) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(
            f"checkpoint {path} has format version {state.get('version')}, expected {CHECKPOINT_VERSION}; "
            "delete it to train from scratch"
        )
    saved = state["config"]
    # A checkpoint written before a setting existed (e.g. mixup) was trained with that setting's default.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = sorted(k for k, v in dataclasses.asdict(config).items() if saved.get(k, defaults[k]) != v)
    if changed:
        raise ConfigError(
            f"checkpoint {path} was written with a different TrainConfig ({', '.join(changed)} differ); "
            "resume with the same config or delete the checkpoint to train from scratch"
        )
    if tuple(state["classes"]) != classes:
        raise ConfigError(
            f"checkpoint {path} was trained on classes {state['classes']}, not {list(classes)}; "
            "delete it to train from scratch"
        )
    return state
