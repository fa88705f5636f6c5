"""Size and batch-1 CPU latency of the MACNN-ICASA and HMoE-SiMBA families and of their papers' ablations.

MACNN (Li et al., 2026) on one 2 s segment of 200 frames of 39 MFCCs, with ICASA, ICA only, SA only and
no attention; HMoE-SiMBA (Wang & Duan, 2025) on 8 s of 260-d frames (40 MFCC + deltas + delta-deltas,
128 mel, 12 chroma at a 10 ms hop: 800 frames), whole, without the router and without SiMBA; 8 classes.
Untrained models (latency does not depend on the weights); `nas.metrics.latency_ms` (warm-up runs, then
timed runs, p50) at the given torch threads, each model in turn in one process.

    .venv/bin/python -m benchmarks.families [--threads 1] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.machine import cpu_model
from nas.metrics import count_parameters, latency_ms
from nas.models import hmoe_simba, macnn
from search_spaces.hmoe_simba import HmoeSimbaArchitecture
from search_spaces.macnn import MacnnArchitecture

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 8
MACNN_SEGMENT = (200, 39)
HMOE_FRAMES = (800, 260)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "families.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        f"macnn-icasa, attention {kind}": (
            macnn.build(MacnnArchitecture(attention=kind), MACNN_SEGMENT, N_CLASSES),
            MACNN_SEGMENT,
            True,
        )
        for kind in ("icasa", "ica", "sa", "none")
    }
    for label, fields in (("whole", {}), ("without router", {"router": False}), ("without SiMBA", {"simba": False})):
        architecture = HmoeSimbaArchitecture(**fields)
        models[f"hmoe-simba, {label}"] = (hmoe_simba.build(architecture, HMOE_FRAMES, N_CLASSES), HMOE_FRAMES, True)
    print(f"\n| model | input | parameters | batch-1 latency p50 ms ({args.threads} thread(s)) |\n|---|---|---:|---:|")
    figures = {}
    for name, (model, shape, frames) in models.items():
        timing = latency_ms(model, shape, warmup=3, runs=args.runs, frames=frames)
        figures[name] = {"parameters": count_parameters(model), **timing}
        print(f"| {name} | {shape} | {figures[name]['parameters']:,} | {timing['latency_ms_p50']:.1f} |")
    args.results.write_text(json.dumps({"machine": cpu_model(), "threads": args.threads, **figures}, indent=2))


if __name__ == "__main__":
    main()
