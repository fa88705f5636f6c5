"""SSL frame-extraction throughput: a DistilHuBERT-sized model over N RAVDESS files, cold then warm cache.

The model is randomly initialised with DistilHuBERT's shape (HuBERT's 7-layer 512-channel conv encoder,
2 transformer layers, hidden 768, 12 heads, FFN 3072: ~23.5M parameters), so the timing is the real
model's without its weights (nothing is downloaded). Cold = empty cache (decode, run the model, write);
warm = the same cache again (hash and read only). The model load is timed on its own: a process pays
it once (load_ssl_model keeps the model), every extraction after that does not.

Group-norm models like DistilHuBERT are batched only over equal-length signals (see nas.features.ssl):
with --duration shorter than the files (RAVDESS: 3-5 s) every utterance is cut to the same length and
batches fill; at the default 6 s (Ahmadianshalchi et al.'s 300 frames) most run one at a time.

    .venv/bin/python -m benchmarks.ssl_frames [--files 48] [--batch-size 8] [--device cpu] [--duration 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch
from transformers import HubertConfig, HubertModel
from transformers.utils import logging as transformers_logging

from benchmarks.machine import cpu_model
from nas.data.types import Utterance
from nas.features.spec import FeatureSpec, Ssl
from nas.features.ssl import extract_ssl, load_ssl_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "ssl_frames.json"


def _save_distilhubert_sized(directory: Path) -> int:
    """A random HubertModel with DistilHuBERT's architecture, saved like a real checkpoint; its parameter count."""
    torch.manual_seed(0)
    config = HubertConfig(num_hidden_layers=2, hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    model = HubertModel(config)
    transformers_logging.disable_progress_bar()  # save_pretrained's shard bar would clutter the table
    model.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--files", type=int, default=48, help="RAVDESS files to extract (spread over the actors)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--duration", type=float, default=6.0, help="duration_s: audio is cut to this")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()

    paths = sorted(args.root.glob("Actor_*/*.flac"))
    if not paths:
        parser.error(f"no Actor_*/*.flac files under {args.root}")
    # Every k-th file, so the sample spans actors, emotions and lengths.
    paths = paths[:: max(1, len(paths) // args.files)][: args.files]
    utterances = [Utterance(path=p, label="neutral", speaker=p.parent.name) for p in paths]

    with tempfile.TemporaryDirectory(prefix="sernas-ssl-bench-") as tmp:
        model_dir = Path(tmp) / "distilhubert-sized"
        n_params = _save_distilhubert_sized(model_dir)
        # 300 frames, as Ahmadianshalchi et al. pad or cut to (6 s of audio gives 299).
        spec = FeatureSpec(
            frontends=(Ssl(model_dir=model_dir),), layout="frames", duration_s=args.duration, max_frames=300
        )
        print(
            f"machine: {os.cpu_count()} CPUs, {cpu_model()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), device {args.device}"
        )
        if args.device.startswith("cuda"):
            print(f"gpu:     {torch.cuda.get_device_name(args.device)}")
        print(f"corpus:  {len(utterances)} files under {args.root}")
        print(f"model:   random DistilHuBERT-sized HubertModel, {n_params / 1e6:.1f}M parameters")
        print(f"spec:    duration_s {args.duration}, {spec.output_shape} frames, batch size {args.batch_size}")

        start = time.perf_counter()
        load_ssl_model(spec.ssl, args.device)
        load_s = time.perf_counter() - start

        rows: list[dict[str, float | int | str]] = []
        cache = Path(tmp) / "cache"
        for run in ("cold", "warm"):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = extract_ssl(
                utterances, spec, cache, progress=False, device=args.device, batch_size=args.batch_size
            )
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "run": run,
                    "seconds": round(seconds, 3),
                    "utterances_per_s": round(len(utterances) / seconds, 2),
                    "from_cache": result.from_cache,
                    "problems": len(result.problems),
                }
            )
        audio_s = float(sum(result.lengths)) * 320 / 16000  # seconds of audio behind the kept frames

    print(f"\nmodel load (hash + from_pretrained): {load_s:.2f} s; {audio_s:.0f} s of audio in the frames\n")
    print("| run | time | utterances / s | from cache |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['run']} | {row['seconds']:.2f} s | {row['utterances_per_s']:.1f} | {row['from_cache']} |")
    if rows[0]["seconds"]:
        print(f"\ncold: {audio_s / float(rows[0]['seconds']):.1f}x real time")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "ssl_frames",
                "machine": {
                    "cpus": os.cpu_count(),
                    "cpu": cpu_model(),
                    "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "device": args.device,
                    "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                },
                "files": len(utterances),
                "audio_s": round(audio_s, 1),
                "batch_size": args.batch_size,
                "duration_s": args.duration,
                "model_parameters": n_params,
                "model_load_s": round(load_s, 3),
                "runs": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
