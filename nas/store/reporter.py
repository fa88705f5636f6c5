"""DbReporter: the Reporter a worker hands to a strategy; it writes to the study database."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from nas.genome import AnyGenome
from nas.reporting import Reporter, TrialState
from nas.store import repository
from nas.store.repository import EventRow, Report, StepRow

log = logging.getLogger("sernas")


class DbReporter(Reporter):
    """Reports of one search, stored through `nas.store.repository`.

    Steps and log lines are buffered and written in one transaction when `flush_every` of them
    are waiting or `flush_seconds` after the first one arrived, whichever comes first, so a
    strategy reporting every batch does not turn into one commit per batch. They keep the order
    they were reported in (a step becomes an `epoch` event among the log lines), and `start_trial`,
    `finish_trial`, `flush` and `close` write what is waiting first, so the search's events are in
    the order things happened. A background write that fails (database briefly unavailable) keeps
    its rows and is retried; an explicit one raises.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        search_id: str,
        flush_every: int = 100,
        flush_seconds: float = 2.0,
    ) -> None:
        self.sessions, self.search_id = sessions, search_id
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._reports: list[Report] = []
        self._timer: threading.Timer | None = None
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()  # batches reach the database in the order they were taken

    def start_trial(
        self, key: str, params: dict[str, Any], *, fold: int | None = None, stage: str | None = None
    ) -> int:
        self.flush()  # what was reported before the trial started is shown before it
        return repository.start_trial(self.sessions, self.search_id, key, params, fold=fold, stage=stage)

    def report(self, trial_id: int, step: int, metrics: dict[str, Any]) -> None:
        self._add(StepRow(trial_id, step, dict(metrics)))

    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        metrics: dict[str, Any],
        genome: AnyGenome | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        self.flush()  # the trial's last steps land before it is shown as finished
        genome_json = None if genome is None else genome.model_dump(mode="json")
        repository.finish_trial(self.sessions, trial_id, state, metrics, genome_json, artifacts)

    def log(self, message: str, level: int = logging.INFO) -> None:
        super().log(message, level)
        self._add(EventRow(self.search_id, message, level))

    def flush(self) -> None:
        """Write everything buffered now; raises if the database refuses (the rows stay buffered)."""
        with self._write_lock:
            with self._buffer_lock:
                reports, self._reports = self._reports, []
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            if not reports:
                return
            try:
                repository.add_reports(self.sessions, reports)
            except Exception:
                with self._buffer_lock:  # put them back in front of anything reported meanwhile
                    self._reports[:0] = reports
                raise

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> DbReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _add(self, report: Report) -> None:
        with self._buffer_lock:
            self._reports.append(report)
            full = len(self._reports) >= self.flush_every
            if not full:
                self._arm_timer()
        if full:
            self._background_flush()

    def _background_flush(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            log.warning("could not write reports of search %s yet (%s); will retry", self.search_id, exc)
            with self._buffer_lock:
                self._arm_timer()

    def _arm_timer(self) -> None:
        """Schedule a background flush unless one is pending (the caller holds the buffer lock)."""
        if self._timer is None:
            self._timer = threading.Timer(self.flush_seconds, self._background_flush)
            self._timer.daemon = True  # never keeps a finished worker process alive
            self._timer.start()


class DurableSteps(Reporter):
    """A `DbReporter` whose epoch-level step reports reach the database at once (what a worker uses).

    Strategies write an epoch's checkpoint before they report the epoch; a resumed run reports its
    restored epochs again, but a live learning curve should not wait for that. So a step is written
    immediately unless another one was written less than `burst_seconds` ago (per-batch reporting
    stays batched). Log lines stay batched: losing the last ones to a SIGKILL loses nothing a resume
    needs.
    """

    def __init__(self, inner: DbReporter, burst_seconds: float = 0.2) -> None:
        self.inner, self.burst_seconds = inner, burst_seconds
        self._last_write = float("-inf")

    def start_trial(
        self, key: str, params: dict[str, Any], *, fold: int | None = None, stage: str | None = None
    ) -> int:
        return self.inner.start_trial(key, params, fold=fold, stage=stage)

    def report(self, trial_id: int, step: int, metrics: dict[str, Any]) -> None:
        self.inner.report(trial_id, step, metrics)
        now = time.monotonic()
        if now - self._last_write >= self.burst_seconds:
            self._last_write = now
            try:
                self.inner.flush()
            except Exception as exc:  # kept buffered; the reporter retries in the background
                log.warning("could not write a step report yet: %s", exc)

    def finish_trial(
        self,
        trial_id: int,
        state: TrialState,
        metrics: dict[str, Any],
        genome: AnyGenome | None = None,
        artifacts: dict[str, Path] | None = None,
    ) -> None:
        self.inner.finish_trial(trial_id, state, metrics, genome, artifacts)

    def log(self, message: str, level: int = logging.INFO) -> None:
        self.inner.log(message, level)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
