"""genetic-ensemble on the bundled 12 RAVDESS actors, 8 classes, 6 speaker folds.

1. members: the searches whose finished fold models the ensembles weight, all on the same corpus, folds,
   seed and validation speakers (validation_fraction 0.15), so that their stored predictions share rows:
   hyperband (`cnn-families-demo`, R = 9) once per family (cnn2d-lstm, cnn1d-lstm, cnn-lstm-fused,
   lstm-cnn) and tpe-asha (`bigru-mfcc-demo`). Each runs in runs/.../members/<name> (resumable: a
   finished search is not run again) and its wall time is recorded.
2. ensemble: the genetic-ensemble search (preset defaults: 5 restarts x 100 generations of 50, fitness
   macro-F1 on validation) over all members, every fold: per fold and as mean ± std over folds, the test UA,
   WA and macro-F1 of the weighted ensemble, the unweighted average and the best single member (chosen on
   validation); the weights; the wall time of the whole search.
3. speed: GA wall time per generation (population 50) on fold 0's real validation rows, and on synthetic
   probabilities of 6 members over 1,000 to 10,000 rows (8 classes), best of 3 runs of 20 generations.

    .venv/bin/python -m benchmarks.genetic_ensemble --out runs/genetic-ensemble [--parts members,ensemble,speed]
    .venv/bin/python -m benchmarks.genetic_ensemble --parts ensemble --seed 1 --searches DIR DIR   # other members
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import cpu_model
from nas.bundle import SPEC
from nas.data.folds import make_folds
from nas.dataset import select_utterances
from nas.genetic import evolve
from nas.reporting import InMemoryReporter
from nas.runner import run_search
from nas.spec import AnySearch, CorpusSpec, FoldSpec, spec_from_preset
from nas.trials import FolderTrials, ensemble_members
from search_spaces.genetic_ensemble import GeneticOptions
from search_spaces.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
N_FOLDS = 6
HYPERBAND_PRESET = "cnn-families-demo"
TPE_PRESET = "bigru-mfcc-demo"
KEYS = ("ua", "wa", "macro_f1")


def member_specs(corpus: CorpusSpec, seed: int) -> dict[str, AnySearch]:
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
        specs[f"hyperband-{family}"] = spec_from_preset(HYPERBAND_PRESET, corpus, overrides, folds=folds, seed=seed)
    specs["tpe-asha-bigru"] = spec_from_preset(TPE_PRESET, corpus, folds=folds, seed=seed)
    return specs


def ensemble_spec(corpus: CorpusSpec, members: list[str], seed: int) -> AnySearch:
    return spec_from_preset(
        "genetic-ensemble", corpus, {"space.searches": members}, folds=FoldSpec(n_folds=N_FOLDS), seed=seed
    )


def run_members(out: Path, corpus: CorpusSpec, seed: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, spec in member_specs(corpus, seed).items():
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


def run_ensemble(out: Path, corpus: CorpusSpec, members: list[str], seed: int) -> dict[str, Any]:
    spec = ensemble_spec(corpus, members, seed)
    start = time.perf_counter()
    result = run_search(spec, out / "ensemble", reporter=InMemoryReporter(), progress=False)
    wall = time.perf_counter() - start
    folds = [
        {
            "fold": fold.fold,
            "weighted": {k: fold.metrics[k] for k in KEYS},
            "uniform": {k: fold.metrics["uniform"][k] for k in KEYS},
            "best_single": {k: fold.metrics["best_single"][k] for k in KEYS}
            | {"member": fold.metrics["best_single"]["member"]},
            "val_macro_f1": {
                "weighted": fold.metrics["val_macro_f1"],
                "uniform": fold.metrics["uniform"]["val_macro_f1"],
                "best_single": fold.metrics["best_single"]["val_macro_f1"],
            },
            "weights": {m["name"].rsplit(" fold ", 1)[0]: round(m["weight"], 3) for m in fold.metrics["members"]},
        }
        for fold in result.folds
    ]
    print("\n| fold | combiner | test UA | test WA | test macro-F1 | val macro-F1 |\n|---|---|---:|---:|---:|---:|")
    for fold in folds:
        for combiner in ("weighted", "uniform", "best_single"):
            scores = fold[combiner]
            print(
                f"| {fold['fold']} | {combiner} | {scores['ua']:.3f} | {scores['wa']:.3f} | "
                f"{scores['macro_f1']:.3f} | {fold['val_macro_f1'][combiner]:.3f} |"
            )
    s = result.summary
    print("\n| combiner | test UA | test WA | test macro-F1 |\n|---|---|---|---|")
    for combiner, prefix in (
        ("weighted (GA)", ""),
        ("unweighted average", "uniform_"),
        ("best single", "best_single_"),
    ):
        cells = " | ".join(f"{s[f'{prefix}{k}_mean']:.3f} ± {s[f'{prefix}{k}_std']:.3f}" for k in KEYS)
        print(f"| {combiner} | {cells} |")
    print(f"ensemble search: {wall:.1f} s wall")
    return {"members": members, "seed": seed, "folds": folds, "summary": s, "wall_s": round(wall, 2)}


def run_speed(corpus: CorpusSpec, members: list[str], seed: int) -> dict[str, Any]:
    options = GeneticOptions(generations=20, restarts=1)
    spec = ensemble_spec(corpus, members, seed)
    utterances, _ = select_utterances(corpus, InMemoryReporter())
    rows = ensemble_members(spec, FolderTrials(), make_folds(spec, utterances), utterances)[0]
    cases = {f"fold 0 ({rows.val.shape[1]} validation rows, {rows.val.shape[0]} members)": (rows.val, rows.val_labels)}
    rng = np.random.default_rng(0)
    for n in (1_000, 10_000):
        cases[f"synthetic, {n} rows, 6 members"] = (rng.dirichlet(np.ones(8), size=(6, n)), rng.integers(0, 8, n))
    figures = {}
    for name, (probabilities, labels) in cases.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            evolve(probabilities, labels, "macro_f1", options, seed=0)
            times.append((time.perf_counter() - start) / options.generations)
        figures[name] = round(min(times) * 1000, 2)
        print(f"{name}: {figures[name]:.2f} ms per generation of {options.population}")
    return {"ms_per_generation": figures, "population": options.population}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/genetic-ensemble"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--parts", default="members,ensemble,speed")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the members and of the ensemble search")
    parser.add_argument(
        "--searches",
        type=Path,
        nargs="+",
        default=None,
        help="ensemble, speed: these finished searches (of --seed) as members, not those of the members part",
    )
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "genetic_ensemble.json")
    args = parser.parse_args()
    corpus = CorpusSpec(name="ravdess", root=args.data.resolve())
    results: dict[str, Any] = json.loads(args.results.read_text()) if args.results.exists() else {}
    results["machine"] = cpu_model()
    out = args.out.resolve()
    searches = args.searches or [out / "members" / name for name in member_specs(corpus, args.seed)]
    members = [str(search.resolve()) for search in searches]
    for part in args.parts.split(","):
        if part == "members":
            results["members"] = run_members(out, corpus, args.seed)
        elif part == "ensemble":
            results["ensemble"] = run_ensemble(out, corpus, members, args.seed)
        elif part == "speed":
            results["speed"] = run_speed(corpus, members, args.seed)
        else:
            raise SystemExit(f"unknown part {part!r}; parts: members, ensemble, speed")
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
