"""The Mamba block of HMoE-SiMBA: the pure-PyTorch CPU block against a plain LSTM of the same width, and
(on a CUDA machine with the `[gpu]` extra) against `mamba_ssm.Mamba` from one state dict.

1. cpu: forward and forward + backward time of `nas.ops.mamba.Mamba` (d_model 128, d_state 256 as in
   Wang & Duan, 2025) and of a one-layer `nn.LSTM` with 128 units, batch 8 x 800 frames (8 s at a 10 ms hop),
   side by side in one run (best of `--repeats`), with the ratio and frames per second.
2. gpu (`--gpu`): the same input through `mamba_ssm.Mamba` (CUDA kernels) and the CPU block moved to CUDA,
   both loaded from one state dict: max |difference| of outputs and of every parameter's gradient, and the
   time of each. Needs CUDA and `pip install ".[gpu]"`; refuses with a message otherwise.

    .venv/bin/python -m benchmarks.mamba [--frames 800] [--batch 8] [--repeats 3] [--threads 2] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.machine import cpu_model
from nas.ops.mamba import Mamba

REPO = Path(__file__).resolve().parents[1]
D_MODEL, D_STATE = 128, 256


def best_time(step: Callable[[], None], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    step()  # warm-up: allocator, kernels, lazy initialisation
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_and_backward(module: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    def step() -> None:
        with torch.set_grad_enabled(backward):
            out = module(x)
            out = out[0] if isinstance(out, tuple) else out  # nn.LSTM returns (output, state)
            if backward:
                out.square().mean().backward()

    return step


def cpu(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.frames, D_MODEL)
    blocks = {"mamba": Mamba(D_MODEL, d_state=D_STATE), "lstm": nn.LSTM(D_MODEL, D_MODEL, batch_first=True)}
    figures: dict[str, float] = {}
    for name, block in blocks.items():
        figures[f"{name}_forward_s"] = best_time(forward_and_backward(block, x, False), args.repeats)
        figures[f"{name}_train_step_s"] = best_time(forward_and_backward(block, x, True), args.repeats)
    frames = args.batch * args.frames
    print("\n| block | forward s | forward + backward s | frames / s (fwd + bwd) |\n|---|---:|---:|---:|")
    for name in blocks:
        step = figures[f"{name}_train_step_s"]
        print(f"| {name} | {figures[f'{name}_forward_s']:.3f} | {step:.3f} | {frames / step:,.0f} |")
    figures["mamba_over_lstm_train_step"] = figures["mamba_train_step_s"] / figures["lstm_train_step_s"]
    print(f"Mamba / LSTM, forward + backward: {figures['mamba_over_lstm_train_step']:.1f}x")
    return figures


def gpu(args: argparse.Namespace) -> dict[str, float]:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    try:
        from mamba_ssm import Mamba as CudaMamba
    except ImportError as exc:
        raise SystemExit(f"--gpu needs mamba-ssm (pip install '.[gpu]'): {exc}") from exc
    torch.manual_seed(0)
    ours = Mamba(D_MODEL, d_state=D_STATE).cuda()
    theirs = CudaMamba(D_MODEL, d_state=D_STATE).cuda()
    theirs.load_state_dict(ours.state_dict())  # the same parameters by name and shape: this is the claim tested
    x = torch.randn(args.batch, args.frames, D_MODEL, device="cuda", requires_grad=True)
    outputs, grads = {}, {}
    for name, block in (("ours", ours), ("mamba_ssm", theirs)):
        block.zero_grad()
        out = block(x)
        out.square().mean().backward()
        outputs[name] = out.detach()
        grads[name] = {k: p.grad.detach().clone() for k, p in block.named_parameters()}
    sync = torch.cuda.synchronize
    figures = {
        "max_abs_output_difference": float((outputs["ours"] - outputs["mamba_ssm"]).abs().max()),
        "max_abs_gradient_difference": max(
            float((grads["ours"][k] - grads["mamba_ssm"][k]).abs().max()) for k in grads["ours"]
        ),
        "ours_train_step_s": best_time(forward_and_backward(ours, x, True), args.repeats, sync),
        "mamba_ssm_train_step_s": best_time(forward_and_backward(theirs, x, True), args.repeats, sync),
    }
    print(json.dumps(figures, indent=2))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="compare with mamba_ssm.Mamba on CUDA instead")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "mamba.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    part = "gpu" if args.gpu else "cpu"
    figures = (gpu if args.gpu else cpu)(args)
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    results[part] = {"machine": cpu_model(), "batch": args.batch, "frames": args.frames, **figures}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
