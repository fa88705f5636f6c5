"""Feature-extraction throughput: the default FeatureSpec over every RAVDESS file, cold then warm.

Cold = empty cache (decode, compute, write, on every core); warm = the same cache again
(hash and read only), which is what every search after the first pays.

    .venv/bin/python -m benchmarks.features [RAVDESS_DIR] [--workers N]   (from the repo root)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.machine import cpu_model
from nas.data.types import Utterance
from nas.features.extract import extract
from nas.features.spec import FeatureSpec

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--workers", type=int, default=None, help="default: every available core")
    args = parser.parse_args()

    # Labels do not affect features; the speaker is the actor folder.
    paths = sorted(args.root.glob("Actor_*/*.flac"))
    if not paths:
        parser.error(f"no Actor_*/*.flac files under {args.root}")
    utterances = [Utterance(path=p, label="neutral", speaker=p.parent.name) for p in paths]
    spec = FeatureSpec()
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(f"corpus:  {len(utterances)} files under {args.root}")
    print(f"spec:    {spec.model_dump_json()}")

    with tempfile.TemporaryDirectory(prefix="sernas-bench-") as cache:
        for run in ("cold", "warm"):
            start = time.perf_counter()
            result = extract(utterances, spec, Path(cache), workers=args.workers, progress=False)
            seconds = time.perf_counter() - start
            print(
                f"{run}: {len(result.kept)} utterances in {seconds:.2f} s = "
                f"{len(utterances) / seconds:.0f} utterances/s "
                f"({result.from_cache} from cache, {len(result.problems)} problems)"
            )


if __name__ == "__main__":
    main()
