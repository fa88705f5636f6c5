"""Reporter: the only channel from a running strategy to the outside world.

Strategies never touch SQL, HTTP or Ray; they report trials, per-epoch values and logs
here. `start_trial` is keyed, so a resumed search that starts the same trial again gets
the same id back instead of a duplicate. The Reporter records; it decides nothing: whether a
trial stops early is its strategy's pruner or scheduler's call (Optuna, Ray Tune), and what a
resumed search skips is read from the search's own checkpoints.

Ownership and consistency: one search has one reporter at a time (the holder of its lease). A
trial's steps are keyed by (trial, step), so a step reported again never duplicates: a resume
replaying a restored epoch with the same values changes nothing (the step keeps the time it was
computed), and other values (the epoch computed again) replace it. `finish_trial` writes every step
reported before it first.
"""

from __future__ import annotations

import abc
import enum
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.genome import AnyGenome

log = logging.getLogger("sernas")


class TrialState(enum.StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class TrialStage(enum.StrEnum):
    """What a trial is to its search. Every stage but SEARCH leaves the weights of a model a user can export."""

    SEARCH = "search"  # a candidate: a supernet's epochs, a sampled configuration, a GA restart
    RETRAIN = "retrain"  # a fold's chosen genome trained by its recipe, then tested once on the fold's speakers
    ENSEMBLE = "ensemble"  # a fold's weighted ensemble of finished fold models
    FINAL = "final"  # the chosen genome trained on every speaker: the search's export


# The step value that holds the architecture a search derived at that step, with its flags ({"architecture": ...,
# "flags": [...]}, the fields of a Genome that the search knows then): the dashboard shows the genome evolve.
STEP_GENOME = "genome"


class Reporter(abc.ABC):
    @abc.abstractmethod
    def start_trial(
        self, key: str, params: dict[str, Any], *, fold: int | None = None, stage: str | None = None
    ) -> int:
        """Open (or, on resume, reopen) the trial named `key` of `fold` and `stage`; returns its id."""

    @abc.abstractmethod
    def report(self, trial_id: int, step: int, metrics: dict[str, Any]) -> None:
        """Intermediate values of one step (epoch) of a trial: numbers, and `STEP_GENOME` where the trial
        derives an architecture at each step."""

    @abc.abstractmethod
    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        metrics: dict[str, Any],
        genome: AnyGenome | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        """Close a trial with its final metrics, its genome and the files it produced."""

    def log(self, message: str, level: int = logging.INFO) -> None:
        log.log(level, message)


@dataclass
class TrialRecord:
    id: int
    key: str
    params: dict[str, Any]
    fold: int | None = None
    stage: str | None = None
    state: TrialState = TrialState.RUNNING
    steps: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    genome: AnyGenome | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


EPOCH_LINE_KEYS = ("train_loss", "val_loss", "val_ua", "val_wa")  # what an epoch's log line shows


class InMemoryReporter(Reporter):
    """Keeps everything in memory (tests, the command line); logs go to the `sernas` logger."""

    def __init__(self, log_epochs: bool = False) -> None:
        self.trials: dict[int, TrialRecord] = {}
        self.messages: list[str] = []
        self.log_epochs = log_epochs  # a line per reported epoch, where no progress bar shows them

    def start_trial(
        self, key: str, params: dict[str, Any], *, fold: int | None = None, stage: str | None = None
    ) -> int:
        for trial in self.trials.values():
            if trial.key == key:
                if trial.state in (TrialState.RUNNING, TrialState.FAILED):  # finished trials stay finished
                    trial.state = TrialState.RUNNING
                return trial.id
        trial_id = len(self.trials) + 1
        self.trials[trial_id] = TrialRecord(trial_id, key, dict(params), fold, stage)
        return trial_id

    def report(self, trial_id: int, step: int, metrics: dict[str, Any]) -> None:
        steps = self.trials[trial_id].steps
        steps[:] = [(s, m) for s, m in steps if s != step]  # keyed by step, as in the study database
        steps.append((step, dict(metrics)))
        if self.log_epochs:
            shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in EPOCH_LINE_KEYS if k in metrics)
            self.log(f"{self.trials[trial_id].key} epoch {step}: {shown}")

    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        metrics: dict[str, Any],
        genome: AnyGenome | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        trial = self.trials[trial_id]
        trial.state, trial.metrics, trial.genome = state, dict(metrics), genome
        trial.artifacts = dict(artifacts or {})

    def log(self, message: str, level: int = logging.INFO) -> None:
        self.messages.append(message)
        super().log(message, level)


def format_duration(seconds: float) -> str:
    """`seconds` as a person reads a duration: "45 s", "12 min", "3 h 20 min", "2 d 5 h"."""
    minutes, hours, days = seconds / 60, seconds / 3600, seconds / 86400
    if seconds < 60:
        return f"{seconds:.0f} s"
    if minutes < 60:
        return f"{minutes:.0f} min"
    if hours < 24:
        return f"{int(hours)} h {int(minutes % 60)} min"
    return f"{int(days)} d {int(hours % 24)} h"
