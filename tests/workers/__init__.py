"""Helpers for the worker tests: a fake search with the real runner's contract, and a thread backend.

`fake_search` has `nas.runner.run_search`'s signature and behaviour where the workers care: keyed
trials per fold and stage, per-epoch reports, a checkpoint per trial in the result folder (so a
re-run resumes after the last finished epoch), `is_cancelled` polled before every epoch, finished
trials skipped (a `done` marker per trial in the result folder, as the real strategies read their own
checkpoints). It logs "fake: <key> from epoch <n> (pid <pid>)" each time it (re)starts a trial,
which is how the tests prove that a resumed search did not start over.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nas.errors import SearchCancelled
from nas.reporting import TrialState
from nas.spec import CorpusSpec, DartsSearch, FoldSpec
from nas.store import repository as repo
from nas.store.models import CLAIMED_SEARCH, SearchStatus
from workers.ray_backend import NodeLimits, Outcome, Reaped
from workers.runner import RunnerConfig, execute


def tiny_spec(
    corpus: str = "ravdess", gpus: float = 0, folds: tuple[int, ...] = (0, 1), epochs: int = 3
) -> DartsSearch:
    spec = DartsSearch(
        corpus=CorpusSpec(name=corpus, root=Path("/data/ravdess")),
        folds=FoldSpec(n_folds=4, only=folds),
        gpus=gpus,
    )
    options = spec.options.model_copy(update={"search_epochs": epochs, "train_epochs": epochs})
    return spec.model_copy(update={"options": options})


class WorkerDied(BaseException):
    """Raised by `fake_search(crash_after=n)`: the thread backend reports the task as crashed."""


def fake_search(
    spec: DartsSearch,
    out: Path,
    *,
    cache_dir: Path | None = None,
    reporter: Any,
    is_cancelled: Any,
    search_id: str | None = None,
    progress: bool = True,
    step_seconds: float = 0.05,
    crash_after: int | None = None,
    killed: threading.Event | None = None,
    trials: Any = None,
) -> SimpleNamespace:
    """Stand-in for `nas.runner.run_search`. corpus name "boom" raises; "ignore-cancel" never stops.

    `crash_after=n`: on the first attempt only, die like a killed worker after n epochs.
    `killed`: set by `ThreadBackend.cancel`, the stand-in for ray.cancel(force=True).
    """
    out.mkdir(parents=True, exist_ok=True)
    crash_marker = out / "crashed-once"
    done_epochs = 0
    if spec.corpus.name == "boom":
        raise ValueError("the fake corpus exploded on purpose")
    uas = []
    for fold in spec.folds.only or range(spec.folds.n_folds):
        for stage, epochs in (("search", spec.options.search_epochs), ("retrain", spec.options.train_epochs)):
            key = f"fold-{fold}/{stage}"
            ckpt = out / f"fold-{fold}-{stage}.json"
            done = out / f"fold-{fold}-{stage}.done"
            if done.exists():  # finished by an earlier attempt: not run (nor reported) again
                if stage == "retrain":
                    uas.append(json.loads(done.read_text())["ua"])
                continue
            trial = reporter.start_trial(key, {"epochs": epochs}, fold=fold, stage=stage)
            start = json.loads(ckpt.read_text())["epoch"] + 1 if ckpt.exists() else 1
            reporter.log(f"fake: {key} from epoch {start} (pid {os.getpid()})")
            for epoch in range(start, epochs + 1):
                if killed is not None and killed.is_set():
                    raise WorkerDied("killed")
                if is_cancelled() and spec.corpus.name != "ignore-cancel":
                    raise SearchCancelled(f"cancelled before epoch {epoch} of {key}")
                time.sleep(step_seconds)
                reporter.report(trial, epoch, {"loss": 1.0 / epoch})
                ckpt.write_text(json.dumps({"epoch": epoch}))
                done_epochs += 1
                if crash_after is not None and done_epochs >= crash_after and not crash_marker.exists():
                    crash_marker.touch()
                    raise WorkerDied(f"simulated worker death after {done_epochs} epochs")
            ua = 0.5 + 0.1 * fold
            if stage == "retrain":
                uas.append(ua)
            reporter.finish_trial(trial, TrialState.COMPLETE, {"ua": ua, "wa": ua, "params": 1000 + fold})
            done.write_text(json.dumps({"ua": ua}))
    (out / "metrics.json").write_text(json.dumps({"ua": max(uas, default=0.0)}))
    return SimpleNamespace(summary={"ua_mean": sum(uas) / len(uas) if uas else None, "folds": len(uas)})


class ThreadBackend:
    """Runs each search's runner in a thread of this process: the dispatcher's logic without Ray.

    A runner that raises `WorkerDied` is reported as crashed, like a Ray worker that was killed:
    nothing was recorded and its heartbeat stopped, so its lease expires. `limits`: the cluster it
    reports (default: unknown, as when Ray cannot tell); a task that no node has free resources for
    stays pending, as in Ray's queue, until `join` brings a node that has them.
    """

    def __init__(self, search_fn: Any = None, limits: NodeLimits | None = None) -> None:
        self.search_fn = search_fn
        self.limits = limits
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.results: dict[int, Reaped] = {}
        self.kills: dict[int, threading.Event] = {}
        self.pending: dict[int, tuple[dict[str, float], Callable[[], None]]] = {}  # ref -> (demand, start)
        self._lock = threading.Lock()
        self._next = 0

    def connect(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def cpus_per_search(self, gpus: float, max_running: int) -> float:
        return 1

    def node_limits(self) -> NodeLimits | None:
        return self.limits

    def submit(self, search_id: str, config: RunnerConfig, gpus: float, cpus: float, search_fn: Any) -> int:
        with self._lock:
            self._next += 1
            ref = self._next
            self.submitted.append(search_id)
            self.kills[ref] = threading.Event()
        fn = functools.partial(search_fn or self.search_fn or fake_search, killed=self.kills[ref])

        def run() -> None:
            try:
                result = Reaped(Outcome.DONE, execute(search_id, config, fn))
            except WorkerDied as exc:
                result = Reaped(Outcome.CRASHED, str(exc))
            except Exception as exc:
                result = Reaped(Outcome.ERROR, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.results.setdefault(ref, result)

        demand = {"GPU": gpus, "CPU": cpus}
        if self.limits is not None and not self.limits.fits_now(demand):
            self.pending[ref] = (demand, threading.Thread(target=run, daemon=True).start)
        else:
            threading.Thread(target=run, daemon=True).start()
        return ref

    def join(self, limits: NodeLimits) -> None:
        """A node joined: the cluster is now `limits`, and the pending tasks it has room for start."""
        self.limits = limits
        for ref, (demand, start) in list(self.pending.items()):
            if limits.fits_now(demand):
                del self.pending[ref]
                start()

    def finished(self, refs: list[int]) -> list[int]:
        with self._lock:
            return [ref for ref in refs if ref in self.results]

    def reap(self, ref: int) -> Reaped:
        with self._lock:
            return self.results[ref]

    def cancel(self, ref: int) -> None:
        with self._lock:
            self.pending.pop(ref, None)
            self.cancelled.append(str(ref))
            if ref in self.kills:
                self.kills[ref].set()
            self.results.setdefault(ref, Reaped(Outcome.CANCELLED))


def wait_until(condition: Callable[[], object], timeout: float = 30.0, message: str = "timed out") -> None:
    """Poll `condition` every 50 ms until it holds; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def status_of(sessions: Any, search_id: str) -> Any:
    """The stored status of a search."""
    return repo.get_search(sessions, search_id).status


def has_ended(sessions: Any, search_id: str) -> bool:
    """Not queued, nor claimed (waiting for Ray to start it, which takes a while on a loaded machine)."""
    return status_of(sessions, search_id) not in (SearchStatus.QUEUED, *CLAIMED_SEARCH)
