"""The bilevel DARTS search loop: alternate architecture and weight steps, checkpoint every epoch."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nas.darts.architect import Architect
from nas.darts.supernet import Supernet
from nas.errors import SearchCancelled
from nas.genome import EmoDartsArchitecture
from nas.train import Examples, evaluate, iterate_batches, seed_everything
from search_spaces.darts import DartsOptions, EmoDartsSpace

EpochCallback = Callable[[int, dict[str, float], EmoDartsArchitecture], None]


@dataclass(frozen=True)
class SearchData:
    weights: Examples  # scaled maps (N, 1, F, T); train the supernet weights
    arch: Examples  # train the architecture parameters, and score each epoch
    classes: tuple[str, ...]


def search_supernet(
    space: EmoDartsSpace,
    options: DartsOptions,
    data: SearchData,
    *,
    seed: int,
    device: str,
    checkpoint: Path,
    on_epoch: EpochCallback | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    progress: bool = True,
) -> Supernet:
    """Search, resuming from `checkpoint` if an earlier run left one; returns the searched supernet.

    `on_epoch(epoch, metrics, architecture)` is called after each epoch (1-based) once its
    checkpoint is written, and again on resume for every epoch the checkpoint holds.
    """
    seed_everything(seed)
    input_shape = tuple(data.weights.x.shape[1:])
    net = Supernet(space, input_shape, len(data.classes)).to(device)
    w_optim = weight_optimizer(net, options)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_optim, options.search_epochs, options.w_lr_min)
    architect = Architect.from_options(net, options)
    rng = np.random.default_rng(seed)
    start = 0
    history: list[tuple[dict[str, float], EmoDartsArchitecture]] = []  # per epoch: metrics, derived architecture
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(state["net"])
        w_optim.load_state_dict(state["w_optim"])
        architect.optimizer.load_state_dict(state["a_optim"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start = state["epoch"] + 1
        history = [(metrics, EmoDartsArchitecture.model_validate(arch)) for metrics, arch in state["history"]]
        if on_epoch is not None:
            for epoch, (metrics, arch) in enumerate(history, start=1):
                on_epoch(epoch, metrics, arch)

    epochs = tqdm(
        range(start, options.search_epochs),
        desc="search",
        disable=not progress,
        unit="epoch",
        initial=start,
        total=options.search_epochs,
    )
    for epoch in epochs:
        lr = schedule.get_last_lr()[0]
        net.train()
        w_losses, a_losses = [], []
        batches = zip(
            iterate_batches(data.weights, options.batch_size, shuffle=True, generator=rng, device=device),
            iterate_batches(data.arch, options.batch_size, shuffle=True, generator=rng, device=device),
            strict=False,
        )
        for (wx, wy, _), (ax, ay, _) in batches:
            if is_cancelled():
                raise SearchCancelled(f"search cancelled during epoch {epoch}; resumable from the checkpoint")
            a_losses.append(architect.step(wx, wy, ax, ay, lr, w_optim))
            w_losses.append(weight_step(net, w_optim, wx, wy, options.w_grad_clip))
        schedule.step()

        scores = evaluate(net, data.arch, data.classes, device=device)
        metrics = {
            "train_loss": float(np.mean(w_losses)),
            "arch_loss": float(np.mean(a_losses)),
            "val_loss": scores["loss"],
            "val_ua": scores["ua"],
            "val_wa": scores["wa"],
            "lr": lr,
        }
        epochs.set_postfix(loss=f"{metrics['train_loss']:.3f}", val_ua=f"{metrics['val_ua']:.3f}")
        history.append((metrics, net.derive()))
        _save(checkpoint, net, w_optim, architect, schedule, rng, epoch, history)
        if on_epoch is not None:
            on_epoch(epoch + 1, *history[-1])  # epochs count from 1, as in nas.train.fit
    return net


def measure_step_seconds(
    space: EmoDartsSpace, options: DartsOptions, input_shape: tuple[int, ...], n_classes: int, *, device: str
) -> float:
    """Seconds of one search step (an architecture step, then a weight step) of a fresh supernet on `device`, at
    `options.batch_size` on random inputs: the second of two steps, as the first also compiles the oneDNN kernels of
    every conv shape on the CPU (about a minute at the paper's configuration). The random state is left as it was."""
    cuda = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        net = Supernet(space, input_shape, n_classes).to(device)
        w_optim = weight_optimizer(net, options)
        architect = Architect.from_options(net, options)
        x = torch.randn(options.batch_size, *input_shape, device=device)
        y = torch.arange(options.batch_size, device=device) % n_classes
        for _ in range(2):
            start = time.perf_counter()
            architect.step(x, y, x, y, options.w_lr, w_optim)
            weight_step(net, w_optim, x, y, options.w_grad_clip)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
    return seconds


def weight_optimizer(net: Supernet, options: DartsOptions) -> torch.optim.SGD:
    """SGD on the supernet weights with the search's momentum and weight decay (DARTS' inner problem)."""
    return torch.optim.SGD(
        net.weights(), options.w_lr, momentum=options.w_momentum, weight_decay=options.w_weight_decay
    )


def weight_step(net: Supernet, w_optim: torch.optim.SGD, x: torch.Tensor, y: torch.Tensor, grad_clip: float) -> float:
    """One SGD step on the supernet weights (DARTS' inner problem); returns the training loss."""
    w_optim.zero_grad()
    loss = net.loss(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.weights(), grad_clip)
    w_optim.step()
    return loss.item()


def _save(
    path: Path,
    net: Supernet,
    w_optim: torch.optim.Optimizer,
    architect: Architect,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    epoch: int,
    history: list[tuple[dict[str, float], EmoDartsArchitecture]],
) -> None:
    state = {
        "net": net.state_dict(),
        "w_optim": w_optim.state_dict(),
        "a_optim": architect.optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
        "history": [(metrics, arch.model_dump(mode="json")) for metrics, arch in history],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous epoch's checkpoint intact
