"""Seconds and memory per emoDARTS search step on this machine; prints a markdown table.

    .venv/bin/python benchmarks/darts_step.py [--steps 3] [--configs paper cnn-only] [--modes ...]

Configurations: `paper` = the emoDARTS paper's (input (1, 128, 128), batch 16, init_channels 8,
4 CNN cells, 2 SeqNN cells, 4 nodes, every op, 4 classes), `paper-rc2` (the same with
Supernet(recompute_cells=2): less memory, more time) and `cnn-only` (the same, seq_cells=0).
Modes: `weight` (forward + backward + SGD step), `arch-1st` / `arch-2nd` (Architect.step, first
or second order). Every (configuration, mode) runs in a fresh subprocess, so that its peak
resident memory (VmHWM, reset at its start) is its own; each runs one weight step first (a search alternates
them, and SGD's momentum buffers then exist), one warm-up step, then `--steps` timed steps (the
median is reported). FLOPs of one step come from torch.utils.flop_counter.FlopCounterMode
(convolutions and matmuls; the oneDNN LSTM kernels are not counted), the machine's peak from a
large float32 matmul. The memory estimate (nas.darts.footprint, counted from the shape) is shown next to
the measured peak.
Other processes on a shared machine slow every number down: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from nas.darts.architect import Architect
from nas.darts.footprint import GB, estimate_search_memory
from nas.darts.memory import peak_rss, reset_peak_rss
from nas.darts.search import weight_step
from nas.darts.supernet import Supernet
from search_spaces.darts import DartsOptions, EmoDartsSpace

INPUT = (1, 128, 128)
BATCH = 16
N_CLASSES = 4
# name -> (space, Supernet's recompute_cells)
CONFIGS = {
    "paper": (EmoDartsSpace(), 0),
    "paper-rc2": (EmoDartsSpace(), 2),  # the two widest CNN cells recompute their edges: memory for time
    "cnn-only": (EmoDartsSpace(seq_cells=0), 0),
}
MODES = ("weight", "arch-1st", "arch-2nd")
TARGETS = (
    "Targets: paper whole second-order step (arch-2nd + weight) < 30 s and < 4 GB; "
    "cnn-only weight step < 8.5 s and <= 5.4 GB. "
    "Reference emoDARTS: ~80 s per second-order architecture step + 17 s per weight step, 21.4 GB."
)


def measure(config: str, mode: str, steps: int) -> dict[str, float]:
    """Run inside the subprocess: time `steps` steps of `mode` and report the process's peak memory."""
    torch.manual_seed(0)
    rss_start = reset_peak_rss()
    space, recompute_cells = CONFIGS[config]
    options = DartsOptions(second_order=mode == "arch-2nd")
    net = Supernet(space, INPUT, N_CLASSES, recompute_cells=recompute_cells).train()
    w_optim = torch.optim.SGD(
        net.weights(), options.w_lr, momentum=options.w_momentum, weight_decay=options.w_weight_decay
    )
    architect = Architect.from_options(net, options)
    x, val_x = torch.randn(2, BATCH, *INPUT).unbind(0)
    y, val_y = torch.randint(0, N_CLASSES, (2, BATCH)).unbind(0)

    def weights() -> None:
        weight_step(net, w_optim, x, y, options.w_grad_clip)

    def arch() -> None:
        architect.step(x, y, val_x, val_y, options.w_lr, w_optim)

    step = weights if mode == "weight" else arch
    weights()  # momentum buffers exist from here on, as in a search
    seconds = []
    for _ in range(steps + 1):  # the first one warms up oneDNN's kernels
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    counts = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=counts) as flops:
        step()
    return {
        "seconds": statistics.median(seconds[1:]),
        "peak_bytes": peak_rss(),
        "start_bytes": rss_start,
        "params": sum(p.numel() for p in net.weights()),
        "flops": flops.get_total_flops(),
    }


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: list[bool],
    **kwargs: object,
) -> int:
    """FLOPs of aten.convolution_backward: one forward-sized conv per gradient asked for.

    torch's own formula counts the weight gradient of a grouped conv as if it were dense: for the
    depthwise convs here that overcounts by their channel count (8-64x)."""
    assert not transposed, "no transposed convs here"
    return conv_flop_count(x_shape, w_shape, grad_out_shape) * (int(output_mask[0]) + int(output_mask[1]))


def matmul_peak_flops(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def run_child(config: str, mode: str, steps: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", config, mode, "--steps", str(steps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.steps)))
        return

    load_start = os.getloadavg()
    peak = matmul_peak_flops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}; "
        f"float32 matmul peak {peak / 1e9:.0f} GFLOP/s; load average at start {load_start[0]:.1f}\n"
    )
    print(
        "| config | mode | s/step | peak RSS GB (growth) | estimate GB (s to estimate) | weights "
        "| GFLOP/step | GFLOP/s | % of matmul peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results: dict[tuple[str, str], dict[str, float]] = {}
    for config in args.configs:
        estimates = {}
        for second_order in (False, True):
            start = time.perf_counter()
            space, recompute_cells = CONFIGS[config]
            estimate = estimate_search_memory(space, INPUT, N_CLASSES, BATCH, second_order, recompute_cells)
            estimates[second_order] = (estimate.total_bytes, time.perf_counter() - start)
        for mode in args.modes:
            r = results[config, mode] = run_child(config, mode, args.steps)
            est, est_s = estimates[mode == "arch-2nd"]
            print(
                f"| {config} | {mode} | {r['seconds']:.2f} | {r['peak_bytes'] / GB:.2f} "
                f"({(r['peak_bytes'] - r['start_bytes']) / GB:.2f}) | {est / GB:.2f} ({est_s:.1f}) "
                f"| {r['params'] / 1e6:.2f}M | {r['flops'] / 1e9:.0f} | {r['flops'] / r['seconds'] / 1e9:.1f} "
                f"| {100 * r['flops'] / r['seconds'] / peak:.1f} |",
                flush=True,
            )
    print()
    for config in args.configs:
        if (config, "arch-2nd") in results and (config, "weight") in results:
            arch, weight = results[config, "arch-2nd"], results[config, "weight"]
            print(
                f"{config}: whole second-order step {arch['seconds'] + weight['seconds']:.1f} s, "
                f"peak {max(arch['peak_bytes'], weight['peak_bytes']) / GB:.2f} GB"
            )
    print(f"\n{TARGETS}\nload average at end {os.getloadavg()[0]:.1f} (shared CPU: other processes slow every step)")


if __name__ == "__main__":
    main()
