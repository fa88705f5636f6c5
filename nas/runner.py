"""Run one search end to end into a result folder; the CLI and the service workers share it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.bundle import GENOME, METRICS, REPORT, SPEC, WEIGHTS
from nas.dataset import class_names, featurise, select_utterances
from nas.errors import ConfigError
from nas.reporting import InMemoryReporter, Reporter
from nas.spec import SpecBase, parse_spec
from nas.strategies import get_strategy
from nas.strategies.base import SearchContext, SearchResult
from nas.trials import FolderTrials, TrialSource


def run_search(
    spec: SpecBase,
    out: Path,
    *,
    cache_dir: Path | None = None,
    reporter: Reporter | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    search_id: str | None = None,
    progress: bool = True,
    trials: TrialSource | None = None,
) -> SearchResult:
    """Run a search and write its result folder; resume it when `out` holds the same spec, extend it when
    `out` holds the same search with fewer folds (the folds it ran are kept, only the new ones run).

    The spec is saved in `out` once the inputs have been read (a start that fails on them leaves nothing
    that would block the corrected command).

    The strategy's preflight (e.g. the emoDARTS memory estimate) runs here, once, against the
    device this process will run the search on, before any audio is decoded. `trials` are the
    finished fold models a strategy may build on (default: result folders, see nas.trials).
    """
    from nas.features.extract import default_cache_dir
    from nas.ops.cnn import threads
    from nas.train import numerics, resolve_device

    with threads(spec.threads):  # a pinned count holds for the search only: the caller keeps its own
        reporter = reporter or InMemoryReporter()
        started_with = numerics()  # before any trial sets its own thread count (trial_cpus)
        resuming = _check_folder(out, spec, reporter)
        strategy = get_strategy(spec.strategy)
        device = resolve_device(spec.device)

        trials = trials or FolderTrials()
        data = None
        if strategy.reads_audio:
            utterances, problems = select_utterances(spec.corpus, reporter)
            spec.check_inputs(trials, utterances)  # what the controller checks at submission, for the command line
            strategy.preflight(spec, len(class_names(utterances, spec.corpus)), device)
            data = featurise(
                utterances,
                problems,
                spec.corpus,
                spec.features,
                reporter,
                cache_dir or default_cache_dir(),
                progress,
                augment=spec.augment,
                seed=spec.seed,
            )
            reporter.log(
                f"{len(data.utterances)} utterances, {len(data.classes)} classes ({', '.join(data.classes)}), "
                f"{len({u.speaker for u in data.utterances})} speakers"
            )
        ctx = SearchContext(
            spec=spec,
            data=data,
            reporter=reporter,
            workdir=out,
            device=device,
            is_cancelled=is_cancelled,
            progress=progress,
            search_id=search_id,
            trials=trials,
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / SPEC).write_text(spec.model_dump_json(indent=2))
        try:
            result = strategy.run(ctx)
        except BaseException:
            # A search that failed before leaving any work behind (e.g. on its inputs) leaves no spec either,
            # so that the corrected command is not refused as "a different search".
            if not resuming and all(p.name == SPEC for p in out.iterdir()):
                (out / SPEC).unlink()
            raise
        _write_result(out, result, [] if data is None else [str(p) for p in data.problems], started_with)
        return result


def _check_folder(out: Path, spec: SpecBase, reporter: Reporter) -> bool:
    """Whether `out` holds this search already, to resume, or to extend with more folds (the search then
    saves its new spec); a folder holding another search is refused."""
    saved_path = out / SPEC
    if not saved_path.exists():
        return False
    saved = parse_spec(saved_path.read_text())
    if saved == spec:
        reporter.log(f"resuming the search in {out}")
        return True
    if not _extends(saved, spec):
        raise ConfigError(
            f"{out} holds a different search (see {saved_path}); choose another --out, or delete it to start "
            "over (the same search with more folds in `folds.only` extends it)"
        )
    added = (
        "every other fold"
        if spec.folds.only is None
        else f"fold(s) {sorted(set(spec.folds.only) - set(saved.folds.only or ()))}"
    )
    reporter.log(f"extending the search in {out} with {added}: the folds it ran are kept")
    return True


def _extends(saved: SpecBase, spec: SpecBase) -> bool:
    """`spec` is `saved` with more folds of the same split: every fold `saved` ran is one of its folds."""
    if saved.model_copy(update={"folds": spec.folds}) != spec or saved.folds.only is None:
        return False
    same_split = saved.folds.model_copy(update={"only": spec.folds.only}) == spec.folds
    return same_split and (spec.folds.only is None or set(saved.folds.only) < set(spec.folds.only))


def _write_result(out: Path, result: SearchResult, problems: list[str], started_with: dict[str, Any]) -> None:
    """The export (the final model, else the best fold's) and its metrics: the final model's own (validation,
    what it trained on, its expected quality from the folds), or the best fold's test report; then the
    summary and every fold; and `started_with`, what the figures depend on besides the spec and the data."""
    export = result.final or result.best
    for name in (GENOME, WEIGHTS):
        shutil.copyfile(export.weights.parent / name, out / name)
    metrics = {
        **export.metrics,
        "best_fold": result.best.fold,
        "summary": result.summary,
        "folds": [fold.metrics for fold in result.folds],
        "skipped_files": problems,
        "numerics": started_with,
    }
    (out / METRICS).write_text(json.dumps(metrics, indent=2))
    (out / REPORT).write_text(_report(result, problems))


def _exported(result: SearchResult) -> str:
    if result.final is None:
        return f"Exported model: fold {result.best.fold} (best validation score; test scores never choose)."
    m = result.final.metrics
    return (
        f"Exported model: the genome of fold(s) {', '.join(map(str, m['chosen_from_folds']))} (chosen on validation "
        f"scores; test scores never choose), trained on {m['trained_on']['utterances']} utterances of "
        f"{len(m['trained_on']['speakers'])} speakers and stopped early on {', '.join(m['validation_speakers'])}; "
        "the fold figures above are its expected quality on new speakers."
    )


def _report(result: SearchResult, problems: list[str]) -> str:
    s = result.summary
    lines = [
        "# Search report",
        "",
        f"Test UA {s['ua_mean']:.3f} ± {s['ua_std']:.3f}, WA {s['wa_mean']:.3f} ± {s['wa_std']:.3f}, "
        f"macro-F1 {s['macro_f1_mean']:.3f} ± {s['macro_f1_std']:.3f} over {len(result.folds)} fold(s).",
        _exported(result),
        "",
        "| fold | test speakers | family | val UA | test UA | test WA | macro-F1 | params | flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fold in result.folds:
        m = fold.metrics
        lines.append(
            f"| {fold.fold} | {', '.join(fold.test_speakers)} | {fold.genome.family} | {m['val_ua']:.3f} | "
            f"{m['ua']:.3f} | "
            f"{m['wa']:.3f} | {m['macro_f1']:.3f} | {m['params']:,} | {', '.join(fold.genome.flags) or '-'} |"
        )
    lines += result.report_lines
    if problems:
        lines += ["", f"Files left out ({len(problems)}):", *[f"- {p}" for p in problems]]
    return "\n".join(lines) + "\n"
