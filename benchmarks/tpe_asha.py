"""tpe-asha on the bundled 12 RAVDESS actors, 8 classes, speaker folds: what pruning saves, and search quality.

1. Quality: the whole protocol (search per fold with successive-halving pruning, retrain the chosen
   configuration, test once on the fold's held-out speakers) over all folds; test UA / WA mean ± std
   over folds and CPU-minutes.
2. Pruning: the searches of some folds run again without a pruner (same seed, same trial budget),
   against the same folds of run 1: epochs trained, the share pruning saved, the best validation
   score per fold (pruning should save epochs at equal or better best validation UA), trials per CPU-hour.

    .venv/bin/python -m benchmarks.tpe_asha --out runs/tpe-asha [--set options.n_trials=6]
    .venv/bin/python -m benchmarks.tpe_asha --parts quality --baseline --seed 1 --threads 1   # one seed of several
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.baseline import (
    add_fold_estimate_arguments,
    describe_baseline,
    describe_export,
    export_figures,
    holdout_baseline,
)
from benchmarks.machine import cpu_model
from nas.reporting import InMemoryReporter
from nas.runner import run_search
from nas.spec import CorpusSpec, FoldSpec, spec_from_preset
from nas.strategies.tpe_asha import STUDY_FILE
from search_spaces.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
PARTS = ("quality", "pruning")
BASELINE_PRESET = "cnn-families-demo"  # whose feature maps the baseline reads (see quality)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_search(spec: Any, out: Path) -> tuple[Any, float, float]:
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    result = run_search(spec, out, reporter=InMemoryReporter(), progress=False)
    return result, cpu_seconds() - cpu0, time.perf_counter() - wall0


def study_figures(out: Path, folds: list[int] | None = None) -> dict[str, Any]:
    """Trials, epochs trained and best validation value of each fold's study (of `folds`, default all)."""
    storage = f"sqlite:///{out / STUDY_FILE}"
    figures: dict[str, Any] = {"trials": 0, "pruned": 0, "epochs": 0, "best": {}}
    for summary in optuna.get_all_study_summaries(storage):
        if folds is not None and summary.study_name not in {f"fold-{k}" for k in folds}:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        figures["trials"] += len(trials)
        figures["pruned"] += sum(t.state.name == "PRUNED" for t in trials)
        figures["epochs"] += sum(len(t.intermediate_values) for t in trials)
        figures["best"][summary.study_name] = study.best_value
    return figures


def search_spec(args: argparse.Namespace, corpus: CorpusSpec, overrides: dict[str, Any], folds: FoldSpec) -> Any:
    return spec_from_preset(args.preset, corpus, overrides, folds=folds, seed=args.seed, threads=args.threads)


def quality(args: argparse.Namespace, corpus: CorpusSpec) -> dict[str, Any]:
    """The whole protocol over every fold, with the preset's pruner (successive halving)."""
    spec = search_spec(args, corpus, args.overrides, FoldSpec(n_folds=args.folds))
    result, cpu, wall = timed_search(spec, args.out / "quality")
    s = result.summary
    print(f"\nquality: preset {args.preset} {args.overrides}, {args.folds} speaker folds, 8 classes, seed {spec.seed}")
    print(f"{cpu / 60:.1f} CPU-minutes, {wall / 60:.1f} wall-minutes")
    print(f"test UA {s['ua_mean']:.3f} ± {s['ua_std']:.3f}, WA {s['wa_mean']:.3f} ± {s['wa_std']:.3f}")
    for fold in result.folds:
        print(f"  fold {fold.fold} ({', '.join(fold.test_speakers)}): test UA {fold.metrics['ua']:.3f}")
    run = {
        "seed": spec.seed,
        "summary": s,
        "folds": [f.metrics["ua"] for f in result.folds],
        "export": export_figures(result.final),
        "studies": study_figures(args.out / "quality") | {"cpu_s": cpu, "wall_s": wall},
    }
    if args.baseline:
        o = spec.options
        # The baseline is a 2-D CNN and tpe-asha's features are frames: it reads the maps (MFCC + mel rows) of the
        # hyperband benchmark's preset for as many epochs, so that at a seed both searches face the same baseline.
        features = get_preset(BASELINE_PRESET).sections.features
        run["baseline"] = holdout_baseline(
            spec, o.validation_fraction, args.baseline_epochs, args.out / "baseline", features
        )
        print(describe_baseline(run["baseline"], args.baseline_epochs))
    print(describe_export(run["export"], spec.seed))
    return run


def pruning(args: argparse.Namespace, corpus: CorpusSpec, pruned: dict[str, Any]) -> dict[str, Any]:
    """The same searches of `args.pruning_folds` without a pruner, against the quality run's studies."""
    overrides = args.overrides | {"options.pruner": "none"}
    folds = FoldSpec(n_folds=args.folds, only=tuple(args.pruning_folds))
    _, cpu, wall = timed_search(search_spec(args, corpus, overrides, folds), args.out / "no-pruner")
    rows = {
        "successive-halving": study_figures(args.out / "quality", args.pruning_folds),
        "none": study_figures(args.out / "no-pruner") | {"cpu_s": cpu, "wall_s": wall},
    }
    on, off = rows["successive-halving"], rows["none"]
    print(f"\npruning, folds {args.pruning_folds} (same seed, same trial budget per fold)")
    print("| pruner | trials | pruned | epochs trained | best val UA per fold |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        best = ", ".join(f"{k} {v:.3f}" for k, v in r["best"].items())
        print(f"| {name} | {r['trials']} | {r['pruned']} | {r['epochs']} | {best} |")
    print(f"epochs saved by pruning: {1 - on['epochs'] / off['epochs']:.1%}")
    n_folds = len(args.pruning_folds)
    print(
        f"trials per CPU-hour: with pruning {pruned['studies']['trials'] / (pruned['studies']['cpu_s'] / 3600):.0f} "
        f"({args.folds} folds, retraining included), without {off['trials'] / (cpu / 3600):.0f} ({n_folds} folds)"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--preset", default="bigru-mfcc-demo")
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--pruning-folds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=JSON")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    add_fold_estimate_arguments(parser)
    parser.add_argument(
        "--baseline-epochs", type=int, default=27, help="the baseline's epochs (27: the hyperband benchmark's R)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "tpe-asha")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "tpe_asha.json")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if "pruning" in parts and "quality" not in parts:
        parser.error("--parts: pruning compares against the quality run; add quality")
    args.overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.sets)}
    corpus = CorpusSpec(name="ravdess", root=args.data.resolve())
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    figures: dict[str, Any] = {"machine": cpu_model(), "preset": args.preset, "overrides": args.overrides}
    figures["quality"] = quality(args, corpus)
    if "pruning" in parts:
        figures["pruning"] = pruning(args, corpus, figures["quality"])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
