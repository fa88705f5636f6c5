"""hyperband on the bundled 12 RAVDESS actors, 8 classes, speaker folds: model size, search quality, and
Hyperband against random search at the same epoch budget.

1. paper: the published CNN2D-LSTM (the default `Cnn2dLstmArchitecture`: 3 blocks of 128/256/256 5x5 filters,
   LSTM 48) on the `cnn2d-lstm-hyperband` preset's 128 x 251 log-mel maps, 8 classes: trainable parameters
   and batch-1 CPU latency (20 warm-up and 100 timed runs by default) at 1 and 2 torch threads.
2. quality: the whole protocol (Hyperband per fold over the preset's families, retrain the best configuration,
   test once on the fold's held-out speakers) on every fold (or `--folds`): test UA / WA mean ± std over folds,
   per fold the best validation UA of the search, the test UA and the family chosen; CPU-minutes, search
   trials per CPU-hour (retraining included in the CPU), and how many epochs each search trial trained
   (the rung at which Hyperband stopped it).
3. versus: per fold of `--versus-folds`, Hyperband (the preset's scheduler and options) and then random search
   (`scheduler=fifo`: every configuration trains `max_epochs`) with n_trials = floor(Hyperband's search epochs
   of that fold / max_epochs), at least 1: the same epoch budget, the same seed, the same fold
   (FoldSpec(n_folds=6, only=(k,)), each run in its own folder). Per fold and mean: best validation UA of the
   search trials, test UA of the retrained model, epochs trained, trials, wall and CPU time.

CPU time: Ray runs each trial in a worker process that the raylet (not this process) starts and reaps, so
`getrusage(RUSAGE_CHILDREN)` does not see it. A thread here reads /proc/<pid>/stat of this process and of
every process descended from it (Ray's GCS, raylet and trial workers) every 0.5 s and adds up each
process's utime + stime from the start of the measurement to the last time it was seen. A process's last
half second before it exits (and any process that lives less than that) is missed: the figure is a slight
lower bound, but it is this benchmark's own, whoever else shares the machine. Beside it the JSON keeps the
wall time x the CPUs Ray used (os.cpu_count(): the upper bound on a dedicated machine) and the
whole-machine busy time from /proc/stat (which counts other users' jobs too).

    .venv/bin/python -m benchmarks.hyperband --out runs/hyperband [--parts quality,versus,paper]
        [--set options.n_trials=9] [--folds 0 1 2] [--versus-folds 0 1] [--results PATH]

Figures go to benchmarks/results/hyperband.json (`--results`), rewritten after each part; the printed tables
are ready to paste into benchmarks/README.md. A folder of `--out` that already holds a finished run is
resumed (finished folds are not run again, so their times are not measured): use a fresh `--out`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.baseline import (
    add_fold_estimate_arguments,
    describe_baseline,
    describe_export,
    export_figures,
    holdout_baseline,
)
from benchmarks.machine import cpu_model
from nas.reporting import InMemoryReporter, TrialRecord, TrialState
from nas.runner import run_search
from nas.spec import CorpusSpec, FoldSpec, HyperbandSearch, spec_from_preset

REPO = Path(__file__).resolve().parents[1]
N_FOLDS = 6
PARTS = ("paper", "quality", "versus")
_TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- CPU time of this process tree


def _proc_stats() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, starttime in ticks, utime + stime in seconds) of every process readable now."""
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        rest = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and brackets
        stats[int(entry.name)] = (int(rest[1]), int(rest[19]), (int(rest[11]) + int(rest[12])) / _TICK)
    return stats


def _machine_busy_s() -> float:
    """Busy CPU-seconds of the whole machine since boot (all CPUs, idle and iowait left out)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK  # user nice system idle iowait irq softirq steal


@dataclass
class TreeCpu:
    """CPU-seconds used by this process and its descendants while the context is open (see the docstring)."""

    interval_s: float = 0.5
    seen: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (pid, start) -> [first, last]
    processes: int = 0
    wall_s: float = 0.0
    machine_busy_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self, first: bool = False) -> None:
        stats = _proc_stats()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        todo, tree = [os.getpid()], []
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        for pid in tree:
            if pid not in stats:
                continue
            _, start, cpu = stats[pid]
            record = self.seen.setdefault((pid, start), [cpu if first else 0.0, cpu])
            record[1] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._sample(first=True)
        self._wall0, self._busy0 = time.perf_counter(), _machine_busy_s()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.wall_s = time.perf_counter() - self._wall0
        self.machine_busy_s = _machine_busy_s() - self._busy0
        self.processes = len(self.seen)

    @property
    def cpu_s(self) -> float:
        return sum(last - first for first, last in self.seen.values())

    def figures(self) -> dict[str, float]:
        return {
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "wall_x_cpus_s": self.wall_s * (os.cpu_count() or 1),
            "machine_busy_s": self.machine_busy_s,
            "processes": self.processes,
        }


# ---------------------------------------------------------------- one search, measured


def search_trials(reporter: InMemoryReporter, fold: int | None = None) -> list[TrialRecord]:
    return [t for t in reporter.trials.values() if t.stage == "search" and (fold is None or t.fold == fold)]


def epochs_of(trial: TrialRecord) -> int:
    """Epochs a search trial trained (Tune's training_iteration at its end; its reported steps otherwise)."""
    return int(trial.metrics.get("epochs", len(trial.steps)))


def trial_figures(trials: list[TrialRecord]) -> dict[str, Any]:
    scores = [t.metrics["val_ua"] for t in trials if "val_ua" in t.metrics]
    return {
        "trials": len(trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAILED for t in trials),
        "epochs": sum(epochs_of(t) for t in trials),
        "best_val_ua": max(scores) if scores else None,
        "epochs_histogram": dict(sorted(Counter(epochs_of(t) for t in trials).items())),
        "families_tried": dict(sorted(Counter(str(t.params.get("family", "?")) for t in trials).items())),
    }


def search_spec(args: argparse.Namespace, overrides: dict[str, Any], folds: FoldSpec) -> HyperbandSearch:
    corpus = CorpusSpec(name="ravdess", root=args.data.resolve())
    spec = spec_from_preset(args.preset, corpus, overrides, folds=folds, seed=args.seed, threads=args.threads)
    assert isinstance(spec, HyperbandSearch), f"preset {args.preset} is not a hyperband preset"
    return spec


def measured_search(args: argparse.Namespace, overrides: dict[str, Any], folds: FoldSpec, out: Path) -> dict[str, Any]:
    """Run one search into `out`; its result, every trial's figures and the time it took."""
    spec = search_spec(args, overrides, folds)
    reporter = InMemoryReporter()
    with TreeCpu() as meter:
        result = run_search(spec, out, reporter=reporter, progress=False)
    per_fold = []
    for fold in result.folds:
        m = fold.metrics
        per_fold.append(
            {
                "fold": fold.fold,
                "test_speakers": list(fold.test_speakers),
                "family": fold.genome.family,
                "architecture": fold.genome.architecture.model_dump(mode="json"),
                "test_ua": m["ua"],
                "test_wa": m["wa"],
                "test_macro_f1": m["macro_f1"],
                "retrain_val_ua": m["val_ua"],
                "params": m["params"],
                "search": trial_figures(search_trials(reporter, fold.fold)),
            }
        )
    return {
        "options": spec.options.model_dump(mode="json") | {"n_trials": spec.options.trials()},
        "seed": spec.seed,
        "summary": result.summary,
        "export": export_figures(result.final),
        "folds": per_fold,
        "search": trial_figures(search_trials(reporter)),
        "time": meter.figures(),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------- the parts


def paper(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters and batch-1 CPU latency of the published CNN2D-LSTM on 128 x 251 maps."""
    import torch

    from nas.data.types import EMOTIONS
    from nas.genome import Genome
    from nas.metrics import count_parameters, latency_ms
    from nas.models import build
    from search_spaces.cnn_lstm import Cnn2dLstmArchitecture
    from search_spaces.presets import get_preset

    features = get_preset(args.paper_preset).sections.features
    architecture = Cnn2dLstmArchitecture()
    genome = Genome(input=features, architecture=architecture, classes=EMOTIONS[:8])
    model = build(genome)
    params = count_parameters(model)
    threads_before = torch.get_num_threads()
    latency = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            latency[threads] = latency_ms(
                model, features.output_shape, warmup=args.latency_warmup, runs=args.latency_runs
            )
    finally:
        torch.set_num_threads(threads_before)
    shape = " x ".join(map(str, features.output_shape[1:]))
    print(f"\npaper: CNN2D-LSTM {architecture.model_dump(exclude={'family'})}, input {shape}, 8 classes")
    print(f"batch 1, CPU, {args.latency_warmup} warm-up + {args.latency_runs} timed runs, ms")
    print("| model | input | params | threads | p50 | mean |")
    print("|---|---|---:|---:|---:|---:|")
    for threads, lat in latency.items():
        print(
            f"| CNN2D-LSTM (paper) | {shape} | {params:,} | {threads} | "
            f"{lat['latency_ms_p50']:.1f} | {lat['latency_ms_mean']:.1f} |"
        )
    return {
        "preset": args.paper_preset,
        "input_shape": list(features.output_shape),
        "architecture": architecture.model_dump(mode="json"),
        "params": params,
        "latency_ms": {str(k): v for k, v in latency.items()},
        "warmup": args.latency_warmup,
        "runs": args.latency_runs,
    }


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """The whole protocol over `args.folds` (default every fold) with the preset's scheduler."""
    folds = FoldSpec(n_folds=N_FOLDS, only=None if args.folds is None else tuple(args.folds))
    run = measured_search(args, args.overrides, folds, args.out / "quality")
    if args.baseline:
        spec = search_spec(args, args.overrides, folds)
        o = spec.options
        run["baseline"] = holdout_baseline(spec, o.validation_fraction, o.max_epochs, args.out / "baseline")
    s, t, search = run["summary"], run["time"], run["search"]
    o = run["options"]
    per_cpu_hour = search["trials"] / (t["cpu_s"] / 3600) if t["cpu_s"] > 0 else None
    n = len(run["folds"])
    print(
        f"\nquality: preset {args.preset} {args.overrides or ''}, scheduler {o['scheduler']}, "
        f"{o['n_trials']} trials of up to {o['max_epochs']} epochs (eta {o['reduction_factor']}) per fold, "
        f"{n} of {N_FOLDS} speaker folds, 8 classes"
    )
    print(
        "| folds | test UA (mean ± std) | test WA (mean ± std) | CPU-minutes | wall-minutes | search trials "
        "| trials per CPU-hour |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    print(
        f"| {n} of {N_FOLDS} | {s['ua_mean']:.3f} ± {s['ua_std']:.3f} | {s['wa_mean']:.3f} ± {s['wa_std']:.3f} | "
        f"{t['cpu_s'] / 60:.1f} | {t['wall_s'] / 60:.1f} | {search['trials']} | "
        f"{'-' if per_cpu_hour is None else f'{per_cpu_hour:.0f}'} |"
    )
    print("\n| fold | test speakers | family chosen | best val UA (search) | test UA | test WA | params |")
    print("|---|---|---|---:|---:|---:|---:|")
    for f in run["folds"]:
        print(
            f"| {f['fold']} | {', '.join(f['test_speakers'])} | {f['family']} | {_fmt(f['search']['best_val_ua'])} | "
            f"{f['test_ua']:.3f} | {f['test_wa']:.3f} | {f['params']:,} |"
        )
    if "baseline" in run:
        print("\n" + describe_baseline(run["baseline"], o["max_epochs"]))
    print("\n" + describe_export(run["export"], run["seed"]))
    print("\nepochs per search trial (where Hyperband stopped it), all folds:")
    print("| epochs trained | trials | share |")
    print("|---:|---:|---:|")
    for epochs, count in search["epochs_histogram"].items():
        print(f"| {epochs} | {count} | {count / search['trials']:.0%} |")
    print(
        f"{search['epochs']} epochs in all ({search['complete']} complete, {search['pruned']} stopped early, "
        f"{search['failed']} failed); families tried: "
        + ", ".join(f"{k} {v}" for k, v in search["families_tried"].items())
    )
    return run | {"trials_per_cpu_hour": per_cpu_hour}


def versus(args: argparse.Namespace) -> dict[str, Any]:
    """Per fold: Hyperband, then random search (fifo) with the epochs Hyperband's search trained."""
    rows: dict[str, list[dict[str, Any]]] = {"hyperband": [], "random": []}
    for k in args.versus_folds:
        folds = FoldSpec(n_folds=N_FOLDS, only=(k,))
        hb = measured_search(args, args.overrides, folds, args.out / "versus" / "hyperband" / f"fold-{k}")
        budget, max_epochs = hb["search"]["epochs"], hb["options"]["max_epochs"]
        n_trials = max(1, budget // max_epochs)
        fifo = args.overrides | {"options.scheduler": "fifo", "options.n_trials": n_trials}
        rs = measured_search(args, fifo, folds, args.out / "versus" / "random" / f"fold-{k}")
        for name, run in (("hyperband", hb), ("random", rs)):
            rows[name].append(
                {
                    "fold": k,
                    "scheduler": run["options"]["scheduler"],
                    "n_trials": run["options"]["n_trials"],
                    "best_val_ua": run["search"]["best_val_ua"],
                    "test_ua": run["folds"][0]["test_ua"],
                    "test_wa": run["folds"][0]["test_wa"],
                    "family": run["folds"][0]["family"],
                    "search": run["search"],
                    "time": run["time"],
                }
            )
    hb_scheduler = rows["hyperband"][0]["scheduler"] if rows["hyperband"] else "?"
    print(
        f"\nversus: {hb_scheduler} against random search (fifo, n_trials = floor(its epochs / max_epochs)), "
        f"folds {args.versus_folds}, same seed; preset {args.preset} {args.overrides or ''}"
    )
    print("| fold | search | trials | epochs trained | best val UA (search) | test UA | family | wall-min | CPU-min |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for k in range(len(args.versus_folds)):
        for name in ("hyperband", "random"):
            r = rows[name][k]
            print(
                f"| {r['fold']} | {name} ({r['scheduler']}) | {r['search']['trials']} | {r['search']['epochs']} | "
                f"{_fmt(r['best_val_ua'])} | {r['test_ua']:.3f} | {r['family']} | "
                f"{r['time']['wall_s'] / 60:.1f} | {r['time']['cpu_s'] / 60:.1f} |"
            )
    means: dict[str, dict[str, float | None]] = {}
    for name in ("hyperband", "random"):
        rs_ = rows[name]
        vals = [r["best_val_ua"] for r in rs_ if r["best_val_ua"] is not None]
        means[name] = {
            "trials": statistics.fmean(r["search"]["trials"] for r in rs_),
            "epochs": statistics.fmean(r["search"]["epochs"] for r in rs_),
            "best_val_ua": statistics.fmean(vals) if vals else None,
            "test_ua": statistics.fmean(r["test_ua"] for r in rs_),
            "test_ua_std": statistics.pstdev(r["test_ua"] for r in rs_),
            "wall_s": statistics.fmean(r["time"]["wall_s"] for r in rs_),
            "cpu_s": statistics.fmean(r["time"]["cpu_s"] for r in rs_),
        }
        m = means[name]
        print(
            f"| mean | {name} | {m['trials']:.1f} | {m['epochs']:.1f} | {_fmt(m['best_val_ua'])} | "
            f"{m['test_ua']:.3f} ± {m['test_ua_std']:.3f} | | {m['wall_s'] / 60:.1f} | {m['cpu_s'] / 60:.1f} |"
        )
    return {"folds": args.versus_folds, "runs": rows, "mean": means}


# ---------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    parser.add_argument("--preset", default="cnn-families-demo", help="the searched preset (quality, versus)")
    parser.add_argument("--paper-preset", default="cnn2d-lstm-hyperband", help="whose features the paper part uses")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="quality: these folds (default all 6)")
    parser.add_argument("--versus-folds", type=int, nargs="+", default=[0, 1])
    add_fold_estimate_arguments(parser)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=JSON")
    parser.add_argument("--latency-warmup", type=int, default=20)
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "hyperband")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "hyperband.json")
    parser.add_argument("--quiet", action="store_true", help="no search log on stderr")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    args.overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.sets)}
    if not args.quiet:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logging.getLogger("sernas").addHandler(handler)
        logging.getLogger("sernas").setLevel(logging.INFO)

    import torch

    load = os.getloadavg()[0]
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load:.1f} at start, torch {torch.__version__}")
    figures: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_at_start": load, "torch": torch.__version__},
        "preset": args.preset,
        "overrides": args.overrides,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for part in PARTS:  # in this order whatever --parts says: the quick one first
        if part in parts:
            figures[part] = {"paper": paper, "quality": quality, "versus": versus}[part](args)
            figures["wall_s"] = time.perf_counter() - started
            args.results.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nall parts: {(time.perf_counter() - started) / 60:.1f} wall-minutes; figures in {args.results}")
    if "ray" in sys.modules:
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
