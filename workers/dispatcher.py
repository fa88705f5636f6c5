"""The dispatcher: turns queued searches into Ray tasks, and keeps the queue honest.

Each poll (every `settings.poll_seconds`):
1. reap finished Ray tasks (a runner records its own outcome; a task that failed before its
   runner could is marked failed here; one whose worker died is left to its lease);
2. re-queue searches whose lease expired (`requeue_expired`, with `max_attempts`): their worker
   died, and they resume from their checkpoints when claimed again;
3. renew the leases of this dispatcher's tasks (a task may wait in Ray's queue for a GPU before
   its runner starts renewing itself), and force-stop tasks whose cancel went unheeded;
4. read the cluster's largest node and what each node has free (`cluster`, which the controller also
   checks submissions against), counting a node the cluster may still add (`settings.autoscale_node`);
5. while fewer than `max_running` of its tasks run, claim the oldest queued search
   (`claim_next_search`: atomic, so several dispatchers or controllers on one database never run
   one search twice) and submit it to Ray with the GPUs its spec reserves. A search that asks one
   node for more than any node has fails at once, saying so (resumable): Ray would keep it pending
   forever, shown as running and holding a dispatch slot that the searches behind it wait for.
   A search that some node could hold but none has free now (a GPU node not joined yet, every GPU
   busy) is submitted all the same and marked `waiting`: Ray's queue holds it (and an autoscaler sees
   its demand), Ray starts it when the resources appear, and its runner marks it running then. A
   waiting search holds no dispatch slot, so the searches behind it that can run now are claimed;
   once started it counts against `max_running` again (which may then be exceeded by the searches
   that waited). Cancelling a waiting search cancels it at once and withdraws its Ray task.

Use it in a service (`start()` / `stop()`: a daemon thread) or standalone: `python -m workers.dispatcher`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from nas.store import repository
from nas.store.models import FINISHED_SEARCH, Search, SearchStatus
from workers.runner import RunnerConfig, SearchFn

if TYPE_CHECKING:
    from nas.settings import Settings
    from nas.spec import SpecBase
    from workers.ray_backend import NodeLimits, Reaped

log = logging.getLogger("sernas.workers")


def default_owner() -> str:
    """A lease owner name unique to this dispatcher: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Backend(Protocol):
    """What the dispatcher needs from an executor (`RayBackend`; tests may pass a stand-in)."""

    def connect(self) -> None: ...
    def shutdown(self) -> None: ...
    def cpus_per_search(self, gpus: float, max_running: int) -> float: ...
    def node_limits(self) -> NodeLimits | None: ...
    def submit(
        self, search_id: str, config: RunnerConfig, gpus: float, cpus: float, search_fn: SearchFn | None
    ) -> Any: ...
    def finished(self, refs: list[Any]) -> list[Any]: ...
    def reap(self, ref: Any) -> Reaped: ...
    def cancel(self, ref: Any) -> None: ...


@dataclass
class _Task:
    search_id: str
    lease_owner: str  # this claim's owner name: "<dispatcher owner>#<claim number>"
    ref: Any
    submitted: float = field(default_factory=time.monotonic)
    next_renewal: float = 0.0
    cancel_seen: float | None = None  # when this dispatcher first saw the cancel request
    waiting: bool = False  # in Ray's queue for resources no node has free: holds no dispatch slot
    demand: dict[str, float] = field(default_factory=dict)  # the Ray resources its task asked for


class Dispatcher:
    """Claims queued searches and runs each as a Ray task; see the module docstring.

    `sessions`: the study database (default: one opened from `settings.db_url`, migrated).
    `backend`: the executor (default `RayBackend(settings.ray_address)`, connected on start).
    `search_fn`: passed to the runner instead of `nas.runner.run_search` (tests).
    `cancel_grace`: seconds a running search may take to stop after a cancel request before its
    task is killed (default: a lease, at most 10 s; the runner normally stops at its next batch).
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session] | None = None,
        *,
        backend: Backend | None = None,
        search_fn: SearchFn | None = None,
        owner: str | None = None,
        cancel_grace: float | None = None,
    ) -> None:
        self.settings = settings
        self.owner = owner or default_owner()
        self.search_fn = search_fn
        self.cancel_grace = min(settings.lease_seconds, 10.0) if cancel_grace is None else cancel_grace
        self._engine = None
        if sessions is None:
            from nas.store.db import make_engine, migrate, session_factory

            self._engine = make_engine(settings.db_url)
            migrate(self._engine)
            sessions = session_factory(self._engine)
        self.sessions = sessions
        if backend is None:
            from workers.ray_backend import RayBackend

            backend = RayBackend(settings.ray_address)
        self.backend = backend
        self.tasks: dict[str, _Task] = {}
        self.connected = threading.Event()
        self.error: str | None = None  # why the dispatcher is not working, for /health
        self.cluster: NodeLimits | None = None  # the cluster's largest node, read every poll; None: unknown
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpus: dict[float, float] = {}
        self._claims = 0
        self._spare: dict[str, float] = {}  # resources the tasks that ended in this poll held (see poll_once)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Dispatcher:
        """Connect to Ray and dispatch from a daemon thread; returns at once."""
        if self._thread is not None:
            raise RuntimeError("this dispatcher is already started")
        self._thread = threading.Thread(target=self.run_forever, name="sernas-dispatcher", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Poll now instead of at the next interval (e.g. right after a search was submitted)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and disconnect from Ray (from the dispatcher's own thread, see run_forever).

        The searches still running are not cancelled: with an embedded Ray they die with it, and
        their leases re-queue them (they resume from their checkpoints) once any dispatcher on
        this database runs again; on a cluster they run on and record their own outcome.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("dispatcher did not stop within %g s", timeout)
        if self._engine is not None:
            self._engine.dispose()

    def run_forever(self) -> None:
        """Connect, poll until `stop()`, disconnect; a failed poll (database away) is logged and retried.

        Ray is started and shut down in this same thread: a local Ray's processes are bound to the
        thread that started them (Linux PR_SET_PDEATHSIG) and die when it ends.
        """
        if not self._connect():
            return
        try:
            log.info("dispatcher %s: polling every %g s", self.owner, self.settings.poll_seconds)
            while not self._stop.is_set():
                try:
                    self.poll_once()
                    self.error = None
                except Exception as exc:
                    self.error = f"dispatcher poll failed: {exc}"
                    log.exception("dispatcher poll failed; retrying")
                self._wake.wait(self.settings.poll_seconds)
                self._wake.clear()
        finally:
            try:
                self.backend.shutdown()
            except Exception:
                log.exception("could not disconnect from Ray")

    def _connect(self) -> bool:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.backend.connect()
            except Exception as exc:
                self.error = f"cannot connect to Ray: {exc}"
                if "nauthenticated" in str(exc):
                    self.error += (
                        " (the cluster uses token authentication: set RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN to the cluster's token here)"
                    )
                log.error("%s; retrying in %.0f s", self.error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            self.error = None
            self.connected.set()
            return True
        return False

    # ------------------------------------------------------------ one poll

    def poll_once(self) -> list[str]:
        """One round of reap, re-queue, renew, read the cluster, claim; returns the ids of searches submitted now."""
        held = {task.search_id: task.demand for task in self.tasks.values() if not task.waiting}
        self._reap()
        for search_id in repository.requeue_expired(self.sessions, max_attempts=self.settings.max_attempts):
            log.warning("search %s: its worker went silent; re-queued", search_id)
            stale = self.tasks.pop(search_id, None)
            if stale is not None:  # ours, but we failed to renew in time: make sure it stops
                self.backend.cancel(stale.ref)
        self._renew()
        # What the tasks that ended in this poll held: Ray may report it free only a moment later.
        self._spare = {}
        for search_id, demand in held.items():
            if search_id not in self.tasks:
                for name, amount in demand.items():
                    self._spare[name] = self._spare.get(name, 0.0) + amount
        cluster = self.backend.node_limits()
        if cluster is not None and self.settings.autoscale_node:
            cluster = cluster.with_node(self.settings.autoscale_node)
        self.cluster = cluster
        submitted = []
        while self.running() < self.settings.max_running and not self._stop.is_set():
            # Each claim has its own owner name, so two attempts at one search can never both
            # hold its lease, even from one dispatcher.
            lease_owner = f"{self.owner}#{self._claims + 1}"
            search = repository.claim_next_search(self.sessions, lease_owner, self.settings.lease_seconds)
            if search is None:
                break
            self._claims += 1
            if self._submit(search, lease_owner):
                submitted.append(search.id)
        return submitted

    def running(self) -> int:
        """This dispatcher's tasks that hold a dispatch slot: all but the waiting ones."""
        return sum(not task.waiting for task in self.tasks.values())

    def _submit(self, search: Search, lease_owner: str) -> bool:
        """Submit a claimed search to Ray, running or waiting; False when it failed instead (recorded on it)."""
        from nas.spec import parse_spec

        try:
            spec = parse_spec(search.spec)
            if self._fails_unplaced(search.id, spec, lease_owner):
                return False
            gpus = spec.search_gpus()
            cpus = spec.search_cpus(self._cpus_for(gpus))
            demand = {"GPU": gpus, "CPU": cpus}
            waiting = self._waits(search.id, demand, lease_owner)
            config = RunnerConfig(
                db_url=self.settings.db_url,
                owner=lease_owner,
                results_dir=self.settings.results_dir.resolve(),
                cache_dir=self.settings.cache_dir.resolve(),
                lease_seconds=self.settings.lease_seconds,
                check_seconds=min(self.settings.poll_seconds, 1.0),
                threads=max(1, int(cpus)),
            )
            ref = self.backend.submit(search.id, config, gpus, cpus, self.search_fn)
        except Exception as exc:
            message = f"could not submit the search to Ray: {type(exc).__name__}: {exc}"
            log.exception("search %s: %s", search.id, message)
            repository.mark_finished(self.sessions, search.id, SearchStatus.FAILED, error=message, owner=lease_owner)
            return False
        renewal = time.monotonic() + self.settings.lease_seconds / 3
        self.tasks[search.id] = _Task(search.id, lease_owner, ref, next_renewal=renewal, waiting=waiting, demand=demand)
        repository.add_event(
            self.sessions,
            search.id,
            f"submitted to Ray by {lease_owner} (attempt {search.attempts}; {gpus:g} GPU, {cpus:g} CPU)",
        )
        log.info("search %s: submitted (attempt %d, %g GPU)", search.id, search.attempts, gpus)
        return True

    def _fails_unplaced(self, search_id: str, spec: SpecBase, lease_owner: str) -> bool:
        """Fail a search that no node of the cluster can hold, rather than let it wait for one forever."""
        refusals = [] if self.cluster is None else self.cluster.refusals(spec)
        if not refusals:
            return False
        message = (
            f"no node of the Ray cluster can run it: {'; '.join(why for _, why in refusals)}; "
            "resume it once the cluster has such a node, or submit it again asking for less"
        )
        log.warning("search %s: %s", search_id, message)
        repository.mark_finished(self.sessions, search_id, SearchStatus.FAILED, error=message, owner=lease_owner)
        return True

    def _waits(self, search_id: str, demand: dict[str, float], lease_owner: str) -> bool:
        """Mark a claimed search waiting when no node has `demand` free now; else count it as taken."""
        if self.cluster is None or self.cluster.fits_now(demand, self._spare):
            if self.cluster is not None and self.cluster.fits_now(demand):
                self.cluster = self.cluster.taking(demand)
            else:  # it fits only in what ended in this poll
                self._spare = {name: max(0.0, have - demand.get(name, 0.0)) for name, have in self._spare.items()}
            return False
        asked = ", ".join(f"{amount:g} {name}" for name, amount in demand.items() if amount > 0)
        why = f"no node of the Ray cluster has {asked} free now; Ray starts it when they are"
        log.info("search %s: %s", search_id, why)
        return repository.mark_waiting(self.sessions, search_id, lease_owner, why)

    def _cpus_for(self, gpus: float) -> float:
        if gpus not in self._cpus:
            self._cpus[gpus] = self.backend.cpus_per_search(gpus, self.settings.max_running)
        return self._cpus[gpus]

    def _reap(self) -> None:
        from workers.ray_backend import Outcome

        for ref in self.backend.finished([task.ref for task in self.tasks.values()]):
            task = next(t for t in self.tasks.values() if t.ref == ref)
            del self.tasks[task.search_id]
            reaped = self.backend.reap(ref)
            if reaped.outcome is Outcome.DONE:
                log.info("search %s: runner finished (%s)", task.search_id, reaped.value)
            elif reaped.outcome is Outcome.CRASHED:
                # Its lease is no longer renewed by anyone: it expires and re-queues the search.
                message = f"worker died ({reaped.value}); the search is re-queued when its lease expires"
                log.warning("search %s: %s", task.search_id, message)
                repository.add_event(self.sessions, task.search_id, message, logging.WARNING)
            elif reaped.outcome is Outcome.CANCELLED:
                self._finish_cancelled(task)
            else:
                log.error("search %s: task failed: %s", task.search_id, reaped.value)
                repository.mark_finished(
                    self.sessions,
                    task.search_id,
                    SearchStatus.FAILED,
                    error=f"the worker could not run the search: {reaped.value}",
                    owner=task.lease_owner,
                )

    def _renew(self) -> None:
        """Look at each task's search (a cheap read every poll) and renew its lease when due."""
        now = time.monotonic()
        for task in list(self.tasks.values()):
            if task.cancel_seen is not None:
                self._enforce_cancel(task, now)
                continue
            search = repository.get_search(self.sessions, task.search_id)
            if task.waiting and search is not None:
                if search.status == SearchStatus.CANCELLED:  # cancelled while waiting: nothing of it ran
                    self.backend.cancel(task.ref)
                    del self.tasks[task.search_id]
                    continue
                task.waiting = search.status == SearchStatus.WAITING  # its runner marks it running on start
            if search is not None and search.cancel_requested:
                task.cancel_seen = now  # the runner stops by itself at its next batch, normally
                continue
            if search is not None and search.status in FINISHED_SEARCH:
                continue  # its runner recorded the outcome; the task is reaped when it returns
            if search is None or search.lease_owner != task.lease_owner:
                # Re-queued or claimed by someone else (our lease expired): our task must stop.
                log.warning("search %s: no longer held by this dispatcher; stopping its task", task.search_id)
                self.backend.cancel(task.ref)
                del self.tasks[task.search_id]
                continue
            if now >= task.next_renewal:
                task.next_renewal = now + self.settings.lease_seconds / 3
                repository.renew_lease(self.sessions, task.search_id, task.lease_owner, self.settings.lease_seconds)

    def _enforce_cancel(self, task: _Task, now: float) -> None:
        if task.cancel_seen is not None and now - task.cancel_seen > self.cancel_grace:
            log.warning("search %s: did not stop after cancel; killing it", task.search_id)
            repository.add_event(
                self.sessions,
                task.search_id,
                f"did not stop within {self.cancel_grace:g} s of the cancel request; its task was killed",
                logging.WARNING,
            )
            self.backend.cancel(task.ref)
            task.cancel_seen = float("inf")  # cancelled once; the reap records the outcome

    def _finish_cancelled(self, task: _Task) -> None:
        search = repository.get_search(self.sessions, task.search_id)
        if search is not None and search.cancel_requested:
            repository.mark_finished(self.sessions, task.search_id, SearchStatus.CANCELLED, owner=task.lease_owner)


def main() -> int:
    """`python -m workers.dispatcher`: a dispatcher on its own (settings from SERNAS_* variables),
    e.g. beside controllers started with SERNAS_DISPATCHER=false. Stops on SIGTERM or Ctrl-C."""
    import signal

    from nas.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher = Dispatcher(Settings()).start()
    stop.wait()
    dispatcher.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
