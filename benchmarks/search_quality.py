"""Search quality: emoDARTS on the bundled 12 RAVDESS actors vs the paper's hand-designed baseline.

Both are trained and tested on the same speaker-independent folds with the same loop
(nas.strategies.protocol.retrain_and_test); only the genome differs. CPU time is counted
for the whole DARTS search (search + retraining over all folds).

    .venv/bin/python benchmarks/search_quality.py --out runs/quality [--seed 1] [--set options.search_epochs=20 ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from nas.data.folds import darts_split, make_folds
from nas.dataset import featurise, select_utterances
from nas.genome import CnnBiLstmAttArchitecture, Genome
from nas.metrics import mean_std
from nas.reporting import InMemoryReporter
from nas.runner import run_search
from nas.spec import CorpusSpec, FoldSpec, spec_from_preset
from nas.strategies.base import SearchContext
from nas.strategies.darts import retrain_recipe
from nas.strategies.protocol import SUMMARY_KEYS, plan_fold, retrain_and_test
from nas.train import resolve_device

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

    reporter = InMemoryReporter()
    utterances, problems = select_utterances(spec.corpus, reporter)
    data = featurise(utterances, problems, spec.corpus, spec.features, reporter, None, progress=False)
    ctx = SearchContext(spec, data, reporter, args.out / "baseline", resolve_device(spec.device), progress=False)
    baseline = Genome(
        input=spec.features,
        architecture=CnnBiLstmAttArchitecture(),
        classes=data.classes,
        training=retrain_recipe(spec.options),
    )
    baseline_folds = []
    for fold in make_folds(spec, data.utterances):  # the baseline trains on the same rows as the derived genome
        pool = fold.train_indices(data.utterances)
        options = spec.options
        split = darts_split(
            data.utterances, pool, spec.seed + fold.index, options.search_fraction, options.validation_fraction
        )
        plan = plan_fold(spec, data, fold, split.train, split.validation)
        baseline_folds.append(retrain_and_test(ctx, plan, baseline, ctx.workdir / f"fold-{fold.index}"))
    base = mean_std([f.metrics for f in baseline_folds], SUMMARY_KEYS)
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
    print("\nper fold test UA:")
    for d, b in zip(darts.folds, baseline_folds, strict=True):
        print(
            f"  fold {d.fold} ({', '.join(d.test_speakers)}): darts {d.metrics['ua']:.3f}  "
            f"baseline {b.metrics['ua']:.3f}  flags {list(d.genome.flags)}"
        )


if __name__ == "__main__":
    main()
