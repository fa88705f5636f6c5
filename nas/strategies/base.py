"""The contract every search strategy implements, and what it is handed and returns."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nas.dataset import PreparedData
from nas.genome import AnyGenome
from nas.reporting import Reporter
from nas.spec import SpecBase
from nas.trials import FolderTrials, TrialSource


@dataclass
class SearchContext:
    spec: Any  # the strategy's own spec type (a SpecBase subclass)
    data: PreparedData | None  # None for a strategy that reads no audio (`SearchStrategy.reads_audio`)
    reporter: Reporter
    workdir: Path  # checkpoints and per-fold artifacts; a resumed search reuses it
    device: str = "cpu"
    is_cancelled: Callable[[], bool] = lambda: False
    progress: bool = True
    search_id: str | None = None
    trials: TrialSource = field(default_factory=FolderTrials)  # finished fold models of earlier searches


@dataclass
class FoldResult:
    fold: int
    test_speakers: tuple[str, ...]
    genome: AnyGenome
    weights: Path
    metrics: dict[str, Any]  # test-set report of the retrained model, plus params, latency and `val_<objective>`


@dataclass
class FinalModel:
    """The search's export: the genome chosen on validation, trained on every speaker of the corpus."""

    genome: AnyGenome
    weights: Path
    metrics: dict[str, Any]  # validation scores, what it trained on, and `expected`: the fold estimate


@dataclass
class SearchResult:
    folds: list[FoldResult]
    best: FoldResult  # chosen on the validation objective, never on test scores
    summary: dict[str, float]  # mean and std over folds of the test metrics
    report_lines: list[str] = field(default_factory=list)  # what the strategy adds to report.md
    final: FinalModel | None = None  # the export, when the strategy trains one; else `best` is exported


class SearchStrategy(abc.ABC):
    name: ClassVar[str]
    spec_type: ClassVar[type[SpecBase]]
    reads_audio: ClassVar[bool] = True  # False: it works on earlier searches' stored predictions only

    def preflight(self, spec: Any, n_classes: int, device: str) -> None:  # noqa: B027 - nothing to check by default
        """Refuse, before any audio is decoded, a search that cannot run on `device` (e.g. will not fit).

        Run once per search, by the process that will run it."""

    @abc.abstractmethod
    def run(self, ctx: SearchContext) -> SearchResult:
        """Run the whole search; resumable from `ctx.workdir`, cancellable via `ctx.is_cancelled`."""
