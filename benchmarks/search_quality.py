"""Search quality: emoDARTS on the bundled 12 RAVDESS actors vs the paper's hand-designed baseline.

Both are trained and tested on the same speaker-independent folds with the same loop
(nas.strategies.protocol.retrain_and_test); only the genome differs. CPU time is counted
for the whole DARTS search (search + retraining over all folds).

    .venv/bin/python -m benchmarks.search_quality --out runs/quality [--seed 1] [--set options.search_epochs=20 ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from benchmarks.baseline import train_baseline
from nas.runner import run_search
from nas.spec import CorpusSpec, FoldSpec, spec_from_preset
from nas.strategies.darts import fold_plan, retrain_recipe

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--preset", default="emodarts-demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--only", type=int, nargs="+", metavar="FOLD", help="run these folds only (a quick probe)")
    parser.add_argument("--seed", type=int, default=0, help="the spec's seed: run several for the seed spread")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quality")
    args = parser.parse_args()

    overrides = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.overrides)}
    spec = spec_from_preset(
        args.preset,
        CorpusSpec(name="ravdess", root=args.data.resolve()),
        overrides,
        folds=FoldSpec(n_folds=args.folds, only=args.only),
        seed=args.seed,
    )
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    darts = run_search(spec, args.out / "darts", progress=False)
    darts_cpu, darts_wall = cpu_seconds() - cpu0, time.perf_counter() - wall0

    base, baseline_folds = train_baseline(
        spec, lambda ctx, fold: fold_plan(ctx, fold)[1], retrain_recipe(spec.options), args.out / "baseline"
    )
    params = [f.metrics["params"] for f in baseline_folds]

    rows = [
        ("emoDARTS (searched)", darts.summary, [f.metrics["params"] for f in darts.folds]),
        ("CNN + BiLSTM + attention (paper baseline)", base, params),
    ]
    print(
        f"\nspec: preset {args.preset}, overrides {overrides}, seed {args.seed}, {args.folds} speaker folds, 8 classes"
    )
    print(f"DARTS search + retraining: {darts_cpu / 60:.1f} CPU-minutes, {darts_wall / 60:.1f} wall-minutes\n")
    print("| model | test UA (mean ± std) | test WA (mean ± std) | macro-F1 | params (per fold) |")
    print("|---|---|---|---|---|")
    for name, s, p in rows:
        print(
            f"| {name} | {s['ua_mean']:.3f} ± {s['ua_std']:.3f} | {s['wa_mean']:.3f} ± {s['wa_std']:.3f} | "
            f"{s['macro_f1_mean']:.3f} | {min(p):,}-{max(p):,} |"
        )
    if darts.final is not None:
        trained_on = darts.final.metrics["trained_on"]
        print(
            f"\nexport: the chosen genome trained on {trained_on['utterances']} utterances of "
            f"{len(trained_on['speakers'])} speakers, validation UA {darts.final.metrics['val_ua']:.3f}"
        )
    print("\nper fold test UA:")
    for d, b in zip(darts.folds, baseline_folds, strict=True):
        print(
            f"  fold {d.fold} ({', '.join(d.test_speakers)}): darts {d.metrics['ua']:.3f}  "
            f"baseline {b.metrics['ua']:.3f}  flags {list(d.genome.flags)}"
        )


if __name__ == "__main__":
    main()
