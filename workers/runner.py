"""Execute one claimed search: the body of the Ray task the dispatcher submits.

`execute` runs in a process of its own (a Ray worker), so it opens its own database engine from
the URL. It records where it runs (host, pid, visible GPUs) as an event, keeps the search's lease
alive from a heartbeat thread, and runs (or resumes, from the result folder's checkpoints) the
search through `nas.runner.run_search` with a `DbReporter`. The heartbeat turns a requested
cancel, or a lost lease, into the `is_cancelled` flag the strategy polls before every batch.

Outcome, always recorded under the lease owner's name (so a worker that lost its lease never
overwrites the work of the one that took over):
- the search returns: `completed` with its summary, and the result files as search artifacts;
- `SearchCancelled` after a cancel request: `cancelled` (checkpoints stay; resume continues);
- any other exception: `failed` with the exception's message; the traceback's last frames go to
  the event log;
- the lease was lost: nothing is recorded; whoever holds the search now finishes it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from nas.bundle import RESULT_FILES
from nas.errors import ConfigError, SearchCancelled, SernasError
from nas.reporting import Reporter
from nas.store import repository
from nas.store.db import make_engine, session_factory
from nas.store.models import SearchStatus

if TYPE_CHECKING:
    from nas.store.reporter import DurableSteps
    from nas.trials import TrialSource

log = logging.getLogger("sernas.workers")

# How the search itself is run; `nas.runner.run_search` unless a test injects a stand-in.
SearchFn = Callable[..., Any]

TRACEBACK_CHARS = 4000


@dataclass(frozen=True)
class RunnerConfig:
    """What a runner needs besides the search id; plain values, so it pickles into a Ray task."""

    db_url: str
    owner: str  # the lease owner: the dispatcher that claimed the search
    results_dir: Path  # the search's result folder is results_dir/<search id>
    cache_dir: Path  # the feature cache, shared by all searches
    lease_seconds: float = 30.0
    check_seconds: float = 1.0  # how often the heartbeat looks for a cancel request
    threads: int | None = None  # torch intra-op threads (the CPUs Ray reserved for the task)


class Heartbeat:
    """Renews a search's lease in a daemon thread and says when the search must stop.

    The lease is renewed every `lease_seconds / 3`; a cancel request is looked for every
    `check_seconds` (a cheap read). `should_stop()` becomes true when a cancel was requested,
    or the lease was lost: another worker owns the search, or no renewal has succeeded for a
    whole lease (the database was unreachable, so the lease has probably been given away).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        search_id: str,
        owner: str,
        lease_seconds: float,
        check_seconds: float = 1.0,
    ) -> None:
        self.sessions, self.search_id, self.owner = sessions, search_id, owner
        self.lease_seconds = lease_seconds
        self.renew_every = lease_seconds / 3
        self.check_every = min(check_seconds, self.renew_every)
        self.reason: str | None = None  # "cancel" or "lost" once the search must stop
        self._stop = threading.Event()
        self._flag = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{search_id}", daemon=True)
        self._last_renewal = time.monotonic()

    def should_stop(self) -> bool:
        return self._flag.is_set()

    @property
    def lost(self) -> bool:
        return self.reason == "lost"

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _raise_flag(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.info("search %s: stopping (%s)", self.search_id, reason)
        self._flag.set()

    def _run(self) -> None:
        next_renewal = time.monotonic() + self.renew_every
        while not self._stop.wait(self.check_every):
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + self.renew_every
                    if repository.renew_lease(self.sessions, self.search_id, self.owner, self.lease_seconds):
                        self._last_renewal = time.monotonic()
                    else:
                        self._check()  # False: cancel requested, or the lease is gone
                else:
                    self._check()
            except Exception as exc:  # the database may come back; the lease tells how long to hope
                log.warning("search %s: heartbeat failed: %s", self.search_id, exc)
            if time.monotonic() - self._last_renewal > self.lease_seconds:
                self._raise_flag("lost")

    def _check(self) -> None:
        search = repository.get_search(self.sessions, self.search_id)
        if search is None or search.status != SearchStatus.RUNNING or search.lease_owner != self.owner:
            self._raise_flag("lost")
        elif search.cancel_requested:
            self._raise_flag("cancel")


def execute(search_id: str, config: RunnerConfig, search_fn: SearchFn | None = None) -> str:
    """Run the claimed search `search_id` to its end; returns the status recorded (or "lost")."""
    engine = make_engine(config.db_url)
    try:
        return _execute(session_factory(engine), search_id, config, search_fn)
    finally:
        engine.dispose()


def _execute(sessions: sessionmaker[Session], search_id: str, config: RunnerConfig, search_fn: SearchFn | None) -> str:
    from nas.store.reporter import DbReporter, DurableSteps
    from nas.store.trials import StoreTrials

    search = repository.get_search(sessions, search_id)
    held = search is not None and search.lease_owner == config.owner
    if held and search.status == SearchStatus.WAITING:  # Ray found it the resources it waited for
        held = repository.start_waiting(sessions, search_id, config.owner)
    elif held:
        held = search.status == SearchStatus.RUNNING
    if not held:
        log.warning("search %s is not held by %s any more; not running it", search_id, config.owner)
        return "lost"
    out = config.results_dir / search_id
    gpus, node = os.environ.get("CUDA_VISIBLE_DEVICES"), _ray_node()
    repository.add_event(
        sessions,
        search_id,
        f"worker started: host {socket.gethostname()} pid {os.getpid()} attempt {search.attempts}"
        + ("" if node is None else f" ray node {node}")
        + ("" if gpus is None else f" CUDA_VISIBLE_DEVICES={gpus!r}")
        + f"; results in {out}",
    )
    repository.set_result_dir(sessions, search_id, out)
    heartbeat = Heartbeat(sessions, search_id, config.owner, config.lease_seconds, config.check_seconds)
    heartbeat.start()
    reporter = DurableSteps(DbReporter(sessions, search_id))
    try:
        try:
            trials = StoreTrials(sessions)
            result = _run(search.spec, out, search_id, config, reporter, heartbeat, search_fn, trials)
        except SearchCancelled as exc:
            _close(reporter)
            if heartbeat.reason != "cancel":  # lost lease (or the strategy stopped by itself)
                return _finish(sessions, search_id, config, heartbeat, SearchStatus.FAILED, error=str(exc))
            return _finish(sessions, search_id, config, heartbeat, SearchStatus.CANCELLED)
        except Exception as exc:
            message = _message(exc)
            reporter.log(f"search failed: {message}\n{_tail(exc)}", logging.ERROR)
            _close(reporter)
            return _finish(sessions, search_id, config, heartbeat, SearchStatus.FAILED, error=message)
        _close(reporter)
        _record_results(sessions, search_id, out)
        summary = getattr(result, "summary", None)
        return _finish(sessions, search_id, config, heartbeat, SearchStatus.COMPLETED, summary=summary)
    finally:
        heartbeat.stop()


def _run(
    spec_json: dict[str, Any],
    out: Path,
    search_id: str,
    config: RunnerConfig,
    reporter: Reporter,
    heartbeat: Heartbeat,
    search_fn: SearchFn | None,
    trials: TrialSource,
) -> Any:
    from pydantic import ValidationError

    from nas.spec import parse_spec

    try:
        spec = parse_spec(spec_json)
    except ValidationError as exc:  # the fields at fault and why, not pydantic's dump of the whole spec
        problems = "; ".join(
            (".".join(map(str, e["loc"][1:])) + ": " if len(e["loc"]) > 1 else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(f"the stored spec is invalid: {problems}") from exc
    if config.threads:
        import torch

        torch.set_num_threads(max(1, int(config.threads)))
    if search_fn is None:
        from nas.runner import run_search as search_fn
    return search_fn(
        spec,
        out,
        cache_dir=config.cache_dir,
        reporter=reporter,
        is_cancelled=heartbeat.should_stop,
        search_id=search_id,
        progress=False,
        trials=trials,
    )


def _finish(
    sessions: sessionmaker[Session],
    search_id: str,
    config: RunnerConfig,
    heartbeat: Heartbeat,
    status: SearchStatus,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
) -> str:
    if heartbeat.lost:
        log.warning("search %s: lease lost; leaving its outcome to the worker that holds it now", search_id)
        return "lost"
    if repository.mark_finished(sessions, search_id, status, summary=summary, error=error, owner=config.owner):
        return status.value
    log.warning("search %s: lease lost before %s could be recorded", search_id, status.value)
    return "lost"


def _record_results(sessions: sessionmaker[Session], search_id: str, out: Path) -> None:
    files = {name: out / name for name in RESULT_FILES if (out / name).is_file()}
    if files:
        repository.add_artifacts(sessions, search_id, files)


def _ray_node() -> str | None:
    """The Ray node this runs on, when it runs in a Ray task (the runner never imports Ray itself)."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    except Exception:
        return None


def _close(reporter: DurableSteps) -> None:
    try:
        reporter.close()
    except Exception as exc:  # the outcome matters more than the last buffered log lines
        log.warning("could not write the last reports: %s", exc)


def _message(exc: BaseException) -> str:
    """The error as a user reads it: our own errors say what to fix; others name their type."""
    text = str(exc).strip()
    if isinstance(exc, SernasError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tail(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= TRACEBACK_CHARS else "...\n" + text[-TRACEBACK_CHARS:]
