"""A family trained with its paper's recipe on the bundled 12 RAVDESS actors, 8 classes, its variants side by
side on the same folds: MACNN-ICASA (Li et al., 2026) with and without adaptive acoustic mixup (AAM) and
waveform augmentation; HMoE-SiMBA (Wang & Duan, 2025) whole, without the router and without SiMBA.

Protocol: 6 speaker folds of 2 actors (one man, one woman); of each fold's 10 training actors, 2 (again one
man, one woman) are held out for validation, which picks the epoch; the fold's 2 test actors are scored once,
per utterance (MACNN: the mean of the probabilities of its 2 s windows every 0.4 s; it trains on windows
every 1 s), then again under white noise at 20, 10 and 0 dB SNR; calibration (ECE, Brier) is recorded too.
Features, network and recipe are the family's published defaults (`search_spaces.macnn`,
`search_spaces.hmoe_simba`: FEATURES, the architecture's defaults, RECIPE); `--epochs` lowers the published
count and `--arch field=value` narrows the network on a CPU budget, and both are recorded with the results.
Seeds are fixed (fold seed = --seed + fold); a fold's variants start from the same seed. Each (fold, variant)
is written to the results file as it ends, and a run started again with the same settings skips what is there.

    .venv/bin/python -m benchmarks.recipes macnn-icasa [--epochs 60] [--only 0 1] [--variants plain aam ...]
    .venv/bin/python -m benchmarks.recipes hmoe-simba --epochs 20 --arch d_state=16 --arch expert_dim=32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from benchmarks.machine import cpu_model
from nas.augment.waveform import AudioAugment
from nas.data.folds import speaker_folds
from nas.dataset import featurise, select_utterances
from nas.features.extract import default_cache_dir
from nas.genome import Genome
from nas.metrics import classification_report, count_parameters, mean_std
from nas.models import build
from nas.reporting import InMemoryReporter
from nas.robustness import scores_under_noise
from nas.spec import CorpusSpec
from nas.strategies.protocol import SUMMARY_KEYS, holdout_speakers, plan_fold
from nas.train import TrainConfig, fit, predict_proba
from search_spaces import hmoe_simba, macnn


@dataclass(frozen=True)
class Variant:
    architecture: dict[str, Any] = dataclasses.field(default_factory=dict)
    mixup: bool = False  # adaptive acoustic mixup of training batches
    augment: bool = False  # waveform-augmented copies of the training utterances


FAMILIES = {  # family: (its module of FEATURES, RECIPE and architecture, its variants)
    "macnn-icasa": (
        macnn,
        macnn.MacnnArchitecture,
        {
            "plain": Variant(),
            "aam": Variant(mixup=True),
            "augment": Variant(augment=True),
            "aam+augment": Variant(mixup=True, augment=True),
        },
    ),
    "hmoe-simba": (
        hmoe_simba,
        hmoe_simba.HmoeSimbaArchitecture,
        {
            "whole": Variant(),
            "without router": Variant({"router": False}),
            "without SiMBA": Variant({"simba": False}),
        },
    ),
}
REPO = Path(__file__).resolve().parents[1]
NOISE_SNRS_DB = (20.0, 10.0, 0.0)  # Li et al. (2026)'s robustness test: test UA under white noise at these SNRs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=list(FAMILIES))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--arch", action="append", default=[], metavar="FIELD=VALUE", help="JSON value")
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--only", type=int, nargs="+", metavar="FOLD", help="run these folds only")
    parser.add_argument("--variants", nargs="+", help="default: all of the family's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, help="default: benchmarks/results/recipes_<family>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module, architecture, variants = FAMILIES[args.family]
    chosen = args.variants or list(variants)
    if unknown := set(chosen) - set(variants):
        parser.error(f"{args.family} has no variants {sorted(unknown)}; it has {list(variants)}")
    recipe = module.RECIPE.model_copy(update={"epochs": args.epochs or module.RECIPE.epochs})
    narrowed = {k: json.loads(v) for k, _, v in (a.partition("=") for a in args.arch)}
    features = module.FEATURES
    results_path = args.results or REPO / "benchmarks" / "results" / f"recipes_{args.family.replace('-', '_')}.json"

    settings = {"recipe": recipe.model_dump(), "arch": narrowed, "folds": args.folds, "seed": args.seed}
    results: dict[str, Any] = {"family": args.family, "settings": settings, "machine": cpu_model(), "runs": {}}
    if results_path.exists() and json.loads(results_path.read_text()).get("settings") == settings:
        results = json.loads(results_path.read_text())
    corpus = CorpusSpec(name="ravdess", root=args.data.resolve())
    reporter = InMemoryReporter()
    utterances, problems = select_utterances(corpus, reporter)
    augment = AudioAugment() if any(variants[v].augment for v in chosen) else None
    data = featurise(
        utterances, problems, corpus, features, reporter, default_cache_dir(), augment=augment, seed=args.seed
    )
    unaugmented = dataclasses.replace(data, augmented=[], augmented_lengths=[])
    print(f"{len(data.utterances)} utterances, classes {', '.join(data.classes)}")
    for fold in speaker_folds(data.utterances, args.folds, args.seed):
        if args.only is not None and fold.index not in args.only:
            continue
        train, validation = holdout_speakers(data, fold, 0.2, args.seed + fold.index)
        plan = plan_fold(SimpleNamespace(features=features), data, fold, train, validation)
        for name in chosen:
            key = f"fold-{fold.index}/{name}"
            if key in results["runs"]:
                continue
            variant = variants[name]
            genome = Genome(
                input=features,
                architecture=architecture(**narrowed, **variant.architecture),
                training=recipe.model_copy(update={"mixup": "aam" if variant.mixup else "none"}),
                classes=data.classes,
            )
            model = build(genome, seed=args.seed + fold.index)
            model.set_scaler(plan.mean, plan.std)
            rows = (data if variant.augment else unaugmented).training_rows(plan.train, features.segments)
            start = time.perf_counter()
            outcome = fit(
                model,
                rows,
                data.rows(plan.validation),
                TrainConfig.of(genome.training, seed=args.seed + fold.index),
                classes=data.classes,
                progress=True,
            )
            seconds = time.perf_counter() - start
            test = data.rows(plan.test)
            report = classification_report(test.y, predict_proba(model, test.x, test.lengths), data.classes)
            noise = scores_under_noise(
                model,
                features,
                [data.utterances[i].path for i in plan.test],
                test.y,
                data.classes,
                NOISE_SNRS_DB,
                seed=args.seed + fold.index,
            )
            best = outcome.history[outcome.best_epoch - 1]
            results["runs"][key] = {
                **{k: report[k] for k in (*SUMMARY_KEYS, "ece", "brier")},
                **{f"awgn_{snr}db_ua": scores["ua"] for snr, scores in noise.items()},
                "val_ua": best["val_ua"],
                "best_epoch": outcome.best_epoch,
                "parameters": count_parameters(model),
                "training_examples": len(rows),
                "train_seconds": seconds,
                "test_speakers": list(fold.test_speakers),
            }
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{key}: test UA {report['ua']:.3f} (val UA {best['val_ua']:.3f}, epoch {outcome.best_epoch})")
    columns = (*SUMMARY_KEYS, "ece", *(f"awgn_{snr:g}db_ua" for snr in NOISE_SNRS_DB))
    print(f"\n| variant | folds | {' | '.join(columns)} | train s per fold |\n|---|---:|{'---:|' * len(columns)}---:|")
    for name in chosen:
        runs = [run for key, run in results["runs"].items() if key.endswith(f"/{name}")]
        if runs:
            summary = mean_std(runs, columns)
            cells = " | ".join(f"{summary[f'{k}_mean']:.3f} ± {summary[f'{k}_std']:.3f}" for k in columns)
            seconds = sum(run["train_seconds"] for run in runs) / len(runs)
            print(f"| {name} | {len(runs)} | {cells} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
