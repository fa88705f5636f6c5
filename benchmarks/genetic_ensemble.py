"""genetic-ensemble on the bundled 12 RAVDESS actors, 8 classes, 6 speaker folds.

1. members: the searches whose finished fold models the ensembles weight, all on the same corpus, folds,
   seed and validation speakers (validation_fraction 0.15), so that their stored predictions share rows:
   hyperband (`cnn-families-demo`, R = 9) once per family (cnn2d-lstm, cnn1d-lstm, cnn-lstm-fused,
   lstm-cnn) and tpe-asha (`bigru-mfcc-demo`). Each runs in runs/.../members/<name> (resumable: a
   finished search is not run again) and its wall time is recorded.

    .venv/bin/python -m benchmarks.genetic_ensemble --out runs/genetic-ensemble --parts members
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model
from nas.bundle import SPEC
from nas.reporting import InMemoryReporter
from nas.runner import run_search
from nas.spec import AnySearch, CorpusSpec, FoldSpec, spec_from_preset
from search_spaces.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
N_FOLDS = 6
HYPERBAND_PRESET = "cnn-families-demo"
TPE_PRESET = "bigru-mfcc-demo"


def member_specs(corpus: CorpusSpec) -> dict[str, AnySearch]:
    """One hyperband search per family of the demo preset (its narrow convs and features), and tpe-asha's."""
    folds = FoldSpec(n_folds=N_FOLDS)
    space = get_preset(HYPERBAND_PRESET).sections.space
    specs: dict[str, AnySearch] = {}
    for family in space.families:
        overrides = {
            "space.families": [family],
            "space.params": {family: {k: d.model_dump(mode="json") for k, d in space.params[family].items()}},
            "space.fixed": {k: v for k, v in space.fixed.items() if k == family},
        }
        specs[f"hyperband-{family}"] = spec_from_preset(HYPERBAND_PRESET, corpus, overrides, folds=folds)
    specs["tpe-asha-bigru"] = spec_from_preset(TPE_PRESET, corpus, folds=folds)
    return specs


def run_members(out: Path, corpus: CorpusSpec) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, spec in member_specs(corpus).items():
        folder = out / "members" / name
        finished = (folder / SPEC).exists() and (folder / "metrics.json").exists()
        start = time.perf_counter()
        result = run_search(spec, folder, reporter=InMemoryReporter(), progress=False)
        wall = time.perf_counter() - start
        figures[name] = {
            "folder": str(folder),
            "summary": result.summary,
            "wall_s": None if finished else round(wall, 1),
        }
        print(f"{name}: test UA {result.summary['ua_mean']:.3f} ± {result.summary['ua_std']:.3f} ({wall:.0f} s)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/genetic-ensemble"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--parts", default="members")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "genetic_ensemble.json")
    args = parser.parse_args()
    corpus = CorpusSpec(name="ravdess", root=args.data.resolve())
    results: dict[str, Any] = json.loads(args.results.read_text()) if args.results.exists() else {}
    results["machine"] = cpu_model()
    for part in args.parts.split(","):
        if part == "members":
            results["members"] = run_members(args.out.resolve(), corpus)
        else:
            raise SystemExit(f"unknown part {part!r}; parts: members")
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
