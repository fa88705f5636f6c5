"""Seconds and memory per emoDARTS search step on this machine, ours and optionally the reference's; prints
markdown tables.

    .venv/bin/python benchmarks/darts_step.py [--steps 3] [--configs paper cnn-only] [--modes ...]
        [--reference PATH]

Configurations: `paper` = the emoDARTS paper's (input (1, 128, 128), batch 16, init_channels 8,
4 CNN cells, 2 SeqNN cells, 4 nodes, every op, 4 classes), `paper-rc2` (the same with
Supernet(recompute_cells=2): less memory, more time), `cnn-only` (the same, seq_cells=0) and `demo`
(the `emodarts-demo` preset's space, input and batch: 40 MFCC pooled to (1, 40, 64)).
Modes: `weight` (forward + backward + SGD step), `arch-1st` / `arch-2nd` (Architect.step, first
or second order). Every (configuration, mode) runs in a fresh subprocess, so that its peak
resident memory (VmHWM, reset at its start) is its own; each runs one weight step first (a search alternates
them, and SGD's momentum buffers then exist), one warm-up step, then `--steps` timed steps (the
median is reported). FLOPs of one step come from torch.utils.flop_counter.FlopCounterMode
(convolutions and matmuls; the oneDNN LSTM kernels are not counted), the machine's peak from a
large float32 matmul. The memory estimate (nas.darts.footprint, counted from the shape) is shown next to
the measured peak.

`--reference PATH` also measures the reference emoDARTS code (Rajapakshe et al.), which this repository
does not contain: get it with

    git clone https://github.com/jayaneetha/emoDARTS /tmp/emoDARTS

and pass `--reference /tmp/emoDARTS` (the clone, or its `emoDARTS/` folder). Each (configuration, mode)
is then measured for ours and right after for the reference, each in its own subprocess, and the
run ends with the reference / ours ratios: on a shared machine only ratios from one run compare.
benchmarks/darts_reference.py says how the reference is run and where it differs from ours; it has
no `demo` configuration, and `paper-rc2`'s reference row is the `paper` one.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from nas.darts.architect import Architect
from nas.darts.footprint import GB, estimate_search_memory
from nas.darts.memory import peak_rss, reset_peak_rss
from nas.darts.search import weight_optimizer, weight_step
from nas.darts.supernet import Supernet
from search_spaces.darts import PRESETS, DartsOptions, EmoDartsSpace


@dataclass(frozen=True)
class Config:
    space: EmoDartsSpace
    input_shape: tuple[int, int, int]
    batch: int
    recompute_cells: int = 0  # Supernet's: the widest CNN cells recompute their edges, memory for time


def _preset(name: str) -> Config:
    """A darts preset's space, the maps its features make and its batch."""
    sections = PRESETS[name][1]
    channels, f, t = sections.features.output_shape  # darts presets read (1, F, T) maps
    return Config(sections.space, (channels, f, t), sections.options.batch_size)


PAPER_INPUT = (1, 128, 128)
N_CLASSES = 4
CONFIGS = {
    "paper": Config(EmoDartsSpace(), PAPER_INPUT, 16),
    "paper-rc2": Config(EmoDartsSpace(), PAPER_INPUT, 16, recompute_cells=2),
    "cnn-only": Config(EmoDartsSpace(seq_cells=0), PAPER_INPUT, 16),
    "demo": _preset("emodarts-demo"),
}
MODES = ("weight", "arch-1st", "arch-2nd")
IMPLEMENTATIONS = ("sernas", "reference")
TARGETS = "Aims: paper whole second-order step < 30 s and < 4 GB; every step at least 2x faster than the reference's."
SECOND_ORDER_STEP = "arch-2nd + weight"


def batches(config: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, val_x, val_y): random, from their own generator, so that both implementations get the same
    data whatever their initialisation draws from the global one."""
    generator = torch.Generator().manual_seed(0)
    x, val_x = torch.randn(2, config.batch, *config.input_shape, generator=generator).unbind(0)
    y, val_y = torch.randint(0, N_CLASSES, (2, config.batch), generator=generator).unbind(0)
    return x, y, val_x, val_y


def time_steps(weights: Callable[[], object], step: Callable[[], object], steps: int) -> dict[str, float]:
    """The protocol of every row, whichever the implementation: `weights()` once (a search alternates the
    two steps, and SGD's momentum buffers exist from then on), one warm-up `step()` (the first run of a
    conv shape builds oneDNN's kernels), `steps` timed ones (their median), then one more counting FLOPs."""
    weights()
    seconds = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    counts = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=counts) as flops:
        step()
    return {"seconds": statistics.median(seconds[1:]), "peak_bytes": peak_rss(), "flops": flops.get_total_flops()}


def measure(config: str, mode: str, steps: int) -> dict[str, float]:
    """Run inside the subprocess: time `steps` steps of `mode` and report the process's peak memory."""
    torch.manual_seed(0)
    rss_start = reset_peak_rss()
    cfg = CONFIGS[config]
    options = DartsOptions(second_order=mode == "arch-2nd")
    net = Supernet(cfg.space, cfg.input_shape, N_CLASSES, recompute_cells=cfg.recompute_cells).train()
    w_optim = weight_optimizer(net, options)
    architect = Architect.from_options(net, options)
    x, y, val_x, val_y = batches(cfg)

    def weights() -> None:
        weight_step(net, w_optim, x, y, options.w_grad_clip)

    def arch() -> None:
        architect.step(x, y, val_x, val_y, options.w_lr, w_optim)

    timed = time_steps(weights, weights if mode == "weight" else arch, steps)
    return {**timed, "start_bytes": rss_start, "params": sum(p.numel() for p in net.weights())}


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


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_child(config: str, mode: str, steps: int, implementation: str, reference: Path | None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", config, mode, "--steps", str(steps), "--implementation", implementation]
    if reference is not None:
        cmd += ["--reference", str(reference)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = "killed (out of memory?)" if done.returncode == -9 else f"exit status {done.returncode}"
        last = (done.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{implementation} {config} {mode}: {why}; {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(config: str, mode: str, steps: int, implementation: str, reference: Path | None) -> dict[str, float]:
    if implementation == "sernas":
        return measure(config, mode, steps)
    from benchmarks.darts_reference import measure_reference  # only its children need it

    assert reference is not None, "--implementation reference needs --reference"
    return measure_reference(reference, config, mode, steps)


def _row(config: str, mode: str, implementation: str, r: dict[str, float] | None, estimate: str, peak: float) -> str:
    if r is None:
        return f"| {config} | {mode} | {implementation} | - | - | - | - | - | - | - |"
    return (
        f"| {config} | {mode} | {implementation} | {r['seconds']:.2f} | {r['peak_bytes'] / GB:.2f} "
        f"({(r['peak_bytes'] - r['start_bytes']) / GB:.2f}) | {estimate} "
        f"| {r['params'] / 1e6:.2f}M | {r['flops'] / 1e9:.0f} | {r['flops'] / r['seconds'] / 1e9:.1f} "
        f"| {100 * r['flops'] / r['seconds'] / peak:.1f} |"
    )


def _second_order_step(results: Mapping[str, dict[str, float] | None]) -> dict[str, float] | None:
    """The whole step of a second-order search (arch-2nd, then weight), from the rows of one configuration."""
    arch, weight = results.get("arch-2nd"), results.get("weight")
    if arch is None or weight is None:
        return None
    return {
        "seconds": arch["seconds"] + weight["seconds"],
        "peak_bytes": max(arch["peak_bytes"], weight["peak_bytes"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--reference", type=Path, help="a clone of github.com/jayaneetha/emoDARTS (or its emoDARTS/ folder)"
    )
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--implementation", choices=IMPLEMENTATIONS, default="sernas", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child, args.steps, args.implementation, args.reference)))
        return

    from benchmarks.darts_reference import reference_config, search_dir  # no reference code: it only checks paths

    try:
        reference = search_dir(args.reference) if args.reference else None  # a wrong path fails now, not in a child
    except ValueError as e:
        parser.error(f"--reference {e}")
    load_start = os.getloadavg()
    peak = matmul_peak_flops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}; "
        f"float32 matmul peak {peak / 1e9:.0f} GFLOP/s; load average at start {load_start[0]:.1f}"
        + (f"; reference: {reference}" if reference else "")
        + "\n"
    )
    print(
        "| config | mode | implementation | s/step | peak RSS GB (growth) | estimate GB (s to estimate) | weights "
        "| GFLOP/step | GFLOP/s | % of matmul peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    # implementation -> config -> mode -> result; the reference's by its own configuration name, as two of
    # ours (paper, paper-rc2) are the same configuration of the reference
    ours: dict[str, dict[str, dict[str, float]]] = {}
    theirs: dict[str, dict[str, dict[str, float] | None]] = {}  # None: it failed
    notes: set[str] = set()
    for config in args.configs:
        cfg = CONFIGS[config]
        estimates = {}
        for second_order in (False, True):
            start = time.perf_counter()
            estimate = estimate_search_memory(
                cfg.space, cfg.input_shape, N_CLASSES, cfg.batch, second_order, cfg.recompute_cells
            )
            estimates[second_order] = f"{estimate.total_bytes / GB:.2f} ({time.perf_counter() - start:.1f})"
        ref_config, why_not = reference_config(config)
        for mode in args.modes:
            r = ours.setdefault(config, {})[mode] = run_child(config, mode, args.steps, "sernas", None)
            print(_row(config, mode, "sernas", r, estimates[mode == "arch-2nd"], peak), flush=True)
            if reference is None:
                continue
            if ref_config is None:
                notes.add(f"{config}: {why_not}")
                print(_row(config, mode, "reference", None, "-", peak), flush=True)
                continue
            measured = theirs.setdefault(ref_config, {})
            label = "reference" if ref_config == config else f"reference ({ref_config})"
            if mode not in measured:
                try:
                    measured[mode] = run_child(ref_config, mode, args.steps, "reference", reference)
                except RuntimeError as e:  # its paper arch-2nd needs ~22 GB: the rows of ours still count
                    measured[mode] = None
                    notes.add(str(e))
            elif ref_config != config:
                label = f"reference (= {ref_config} above)"
            print(_row(config, mode, label, measured[mode], "-", peak), flush=True)
    summary = [f"No reference row: {note}" for note in sorted(notes)]
    for config in args.configs:
        if step := _second_order_step(ours.get(config, {})):
            summary.append(
                f"{config}: whole second-order step ({SECOND_ORDER_STEP}) {step['seconds']:.1f} s, "
                f"peak {step['peak_bytes'] / GB:.2f} GB"
            )
    if summary:
        print("\n" + "\n".join(summary))
    if theirs:
        print(
            "\n| config | mode | ours s | reference s | reference / ours time | ours peak GB | reference peak GB "
            "| reference / ours peak |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for config in args.configs:
            ref_config, _ = reference_config(config)
            if ref_config is None or ref_config not in theirs:
                continue
            pairs = {mode: (ours[config][mode], b) for mode in args.modes if (b := theirs[ref_config][mode])}
            a, b = _second_order_step(ours[config]), _second_order_step(theirs[ref_config])
            if a and b:
                pairs[SECOND_ORDER_STEP] = (a, b)
            for mode, (a, b) in pairs.items():
                print(
                    f"| {config} | {mode} | {a['seconds']:.2f} | {b['seconds']:.2f} "
                    f"| {b['seconds'] / a['seconds']:.2f} "
                    f"| {a['peak_bytes'] / GB:.2f} | {b['peak_bytes'] / GB:.2f} "
                    f"| {b['peak_bytes'] / a['peak_bytes']:.2f} |"
                )
    print(f"\n{TARGETS}\nload average at end {os.getloadavg()[0]:.1f} (shared CPU: other processes slow every step)")


if __name__ == "__main__":
    main()
