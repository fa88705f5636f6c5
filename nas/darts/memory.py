"""The emoDARTS search's memory measured on a real supernet: the reference the analytic estimate is checked against.

`nas.darts.footprint.estimate_search_memory` counts a search step's memory from its shape, and is what the
service uses. This module measures it: the supernet is built and run forward while `saved_tensors_hooks`
add up the distinct storages autograd keeps for the backward pass (parameters excluded, they are counted
from the weights; `_activation_bytes` says on which devices). That is the peak of a training step, as
backward only frees them, and it is a fixed part plus a part per sample, so one probe gives it for any
batch size. It takes seconds at the paper's configuration, which is why the service does not run it;
tests/darts/test_memory.py keeps the two within a stated factor, and this one within a factor of the peak
resident memory of real steps (benchmarks/darts_step.py). It also reads the memory a device has free, and
a process's peak resident memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from nas.darts.footprint import MemoryEstimate, step_memory
from nas.darts.supernet import Supernet
from nas.errors import ResourceError
from nas.ops.cnn import threads
from search_spaces.darts import EmoDartsSpace

PROBE_BATCH = 7  # an odd size that no other tensor dimension is likely to share


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # identifies the storage on every device (meta data pointers are all 0)


def _kept(net: Supernet, run: Callable[[], torch.Tensor]) -> list[tuple[int | None, int]]:
    """(first dimension, bytes) of each distinct non-parameter storage autograd keeps for backward
    after `run()`."""
    seen = {_storage(p) for p in net.parameters()}
    kept = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if _storage(t) not in seen:
            seen.add(_storage(t))
            kept.append((t.shape[0] if t.dim() else None, t.untyped_storage().nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()  # the graph is dropped unused: only what it kept matters
    return kept


def _activation_bytes(full: Supernet, space: EmoDartsSpace, n_classes: int, recompute_cells: int) -> tuple[int, int]:
    """(fixed, per-sample) bytes kept for backward by the supernet `full` of `space`.

    The CNN part runs once on the meta device, with PROBE_BATCH samples: shapes only, no kernels
    (on the CPU the first run of every conv shape compiles oneDNN kernels, about a minute at the
    paper's configuration); its tensors are all batch-first, so those whose first dimension is
    the batch grow with it and the others (BN statistics) do not. The SeqNN part is small and runs
    on the CPU, at batch 1 and 2 (a two-point line): its oneDNN LSTMs keep flat workspaces, sized
    by the batch, that meta tensors do not model. One thread: these tiny ops gain nothing from
    more, and on a loaded CPU each parallel region may wait for a descheduled thread.
    """
    with torch.device("meta"):
        cnn_space = space.model_copy(update={"seq_cells": 0})
        cnn = Supernet(cnn_space, full.net.input_shape, n_classes, recompute_cells=recompute_cells).train()
    x = torch.empty(PROBE_BATCH, *full.net.input_shape, device="meta")
    kept = _kept(cnn, lambda: cnn.net.cnn(x, cnn.arch_weights()))
    fixed = sum(n for dim, n in kept if dim != PROBE_BATCH)
    per_sample = sum(n for dim, n in kept if dim == PROBE_BATCH) // PROBE_BATCH

    head = []
    with threads(1):
        for batch in (1, 2):
            features = torch.randn(batch, *full.net.feature_shape).contiguous(memory_format=torch.channels_last)
            y = torch.arange(batch) % n_classes
            run = lambda f=features, y=y: F.cross_entropy(full.net.head(f, full.arch_weights()), y)  # noqa: E731
            head.append(sum(n for _, n in _kept(full, run)))
    per_sample += head[1] - head[0]
    fixed += max(2 * head[0] - head[1], 0)
    return fixed, per_sample


def measure_search_memory(
    space: EmoDartsSpace,
    input_shape: tuple[int, int, int],
    n_classes: int,
    batch_size: int,
    second_order: bool,
    recompute_cells: int = 0,
) -> MemoryEstimate:
    """Memory of a search step on the CPU, float32, for a `Supernet(space, input_shape, n_classes,
    recompute_cells=recompute_cells)`, measured; takes seconds at the paper's configuration."""
    net = Supernet(space, input_shape, n_classes).train()
    fixed, per_sample = _activation_bytes(net, space, n_classes, recompute_cells)
    weight_bytes = sum(p.numel() * p.element_size() for p in net.weights())
    alpha_bytes = sum(a.numel() * a.element_size() for a in net.alphas())
    return step_memory(weight_bytes, alpha_bytes, fixed, per_sample, batch_size, second_order)


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes free for a new search now: the GPU's free memory, or MemAvailable of /proc/meminfo."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return _proc_bytes("/proc/meminfo", "MemAvailable", "cannot tell how much memory is available; set a limit")


def _proc_bytes(path: str, field: str, consequence: str) -> int:
    """A `field:  N kB` line of a /proc file, in bytes."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise ResourceError(f"no {field} in {path}: {consequence}")


def reset_peak_rss() -> int:
    """Start measuring this process's peak resident memory afresh; returns the resident bytes now.

    Not `ru_maxrss`: Linux keeps it across exec, so a subprocess of a large process (a test
    runner, a benchmark driver) would start from its parent's peak and under-report its own."""
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak to the current resident size
    return _proc_bytes("/proc/self/status", "VmRSS", "resident memory cannot be measured here")


def peak_rss() -> int:
    """Peak resident bytes of this process since `reset_peak_rss()` (or its start)."""
    return _proc_bytes("/proc/self/status", "VmHWM", "resident memory cannot be measured here")
