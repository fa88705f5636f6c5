"""The dispatcher's queue logic with runners in threads (no Ray): claims, leases, crashes, cancel."""

from __future__ import annotations

import functools
import time
from collections import Counter

import pytest

from nas.settings import Settings
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.workers import ThreadBackend, fake_search, has_ended, status_of, tiny_spec, wait_until
from workers.dispatcher import Dispatcher


def _settings(db_url: str, tmp_path, **overrides) -> Settings:
    values = {"data_dir": tmp_path, "database_url": db_url, "lease_seconds": 30.0, "poll_seconds": 0.05}
    return Settings(**(values | overrides))


def _submit(sessions, n: int, corpus: str = "ravdess", **spec) -> list[str]:
    body = tiny_spec(corpus, **spec).model_dump(mode="json")
    return [repo.create_search(sessions, body, f"search {i}", "darts").id for i in range(n)]


def _all_finished(sessions, ids) -> bool:
    return all(has_ended(sessions, i) for i in ids)


def test_two_dispatchers_run_every_search_exactly_once(db_url, sessions, tmp_path):
    ids = _submit(sessions, 6)
    backends = [ThreadBackend(), ThreadBackend()]
    fast = functools.partial(fake_search, step_seconds=0.01)
    dispatchers = [
        Dispatcher(_settings(db_url, tmp_path, max_running=2), sessions, backend=b, search_fn=fast).start()
        for b in backends
    ]
    try:
        wait_until(lambda: _all_finished(sessions, ids), timeout=60)
    finally:
        for d in dispatchers:
            d.stop()
    submitted = Counter(backends[0].submitted + backends[1].submitted)
    assert submitted == Counter(ids), "every search submitted once, by one dispatcher"
    for search_id in ids:
        search = repo.get_search(sessions, search_id)
        assert (search.status, search.attempts) == (SearchStatus.COMPLETED, 1)
        assert repo.list_trials(sessions, search_id).total == 4


def test_max_running_limits_the_searches_a_dispatcher_runs_at_once(db_url, sessions, tmp_path):
    ids = _submit(sessions, 3)
    backend = ThreadBackend()
    slow = functools.partial(fake_search, step_seconds=0.2)
    dispatcher = Dispatcher(_settings(db_url, tmp_path, max_running=1), sessions, backend=backend, search_fn=slow)
    assert dispatcher.poll_once() == [ids[0]]
    assert dispatcher.poll_once() == []
    assert [status_of(sessions, i) for i in ids] == [
        SearchStatus.RUNNING,
        SearchStatus.QUEUED,
        SearchStatus.QUEUED,
    ]
    repo.request_cancel(sessions, ids[0])
    for i in ids[1:]:
        repo.request_cancel(sessions, i)
    wait_until(lambda: (dispatcher.poll_once() or True) and not dispatcher.tasks)
    assert status_of(sessions, ids[0]) == SearchStatus.CANCELLED


def test_a_crashed_worker_is_requeued_after_its_lease_and_resumes_without_losing_trials(db_url, sessions, tmp_path):
    (search_id,) = _submit(sessions, 1, epochs=2)
    # Epochs longer than DurableSteps' burst window: every epoch's report is durable at once.
    crashing = functools.partial(fake_search, step_seconds=0.6, crash_after=3)
    backend = ThreadBackend()
    settings = _settings(db_url, tmp_path, lease_seconds=1.0, poll_seconds=0.05)
    dispatcher = Dispatcher(settings, sessions, backend=backend, search_fn=crashing).start()
    try:
        wait_until(lambda: _all_finished(sessions, [search_id]), timeout=30)
    finally:
        dispatcher.stop()
    search = repo.get_search(sessions, search_id)
    assert (search.status, search.attempts) == (SearchStatus.COMPLETED, 2)
    assert backend.submitted == [search_id, search_id]
    trials = repo.list_trials(sessions, search_id).items
    assert sorted(t.key for t in trials) == sorted(
        ["fold-0/search", "fold-0/retrain", "fold-1/search", "fold-1/retrain"]
    )
    for trial in trials:  # no epoch lost, none run twice
        assert [s.step for s in repo.get_trial(sessions, trial.id).steps] == [1, 2]
    events = [e.message for e in repo.events_after(sessions, search_id, limit=1000)]
    assert any("worker died" in m for m in events)
    assert any(m.endswith("re-queued") and "expired" in m for m in events)
    # The crash came after 3 epochs: fold 0's search (2) had finished, its retrain had done 1.
    assert sum(m.startswith("fake: fold-0/search") for m in events) == 1
    assert sum(m.startswith("fake: fold-0/retrain from epoch 2 ") for m in events) == 1


def test_a_search_that_keeps_killing_its_worker_fails_after_max_attempts(db_url, sessions, tmp_path):
    (search_id,) = _submit(sessions, 1)

    class AlwaysCrash(ThreadBackend):
        def submit(self, search_id, config, gpus, cpus, search_fn):
            from workers.ray_backend import Outcome, Reaped

            self._next += 1
            self.submitted.append(search_id)
            self.results[self._next] = Reaped(Outcome.CRASHED, "killed")
            return self._next

    settings = _settings(db_url, tmp_path, lease_seconds=0.3, max_attempts=2)
    dispatcher = Dispatcher(settings, sessions, backend=AlwaysCrash())
    wait_until(lambda: (dispatcher.poll_once() or True) and _all_finished(sessions, [search_id]))
    search = repo.get_search(sessions, search_id)
    assert (search.status, search.attempts) == (SearchStatus.FAILED, 2)
    assert "after 2 attempts" in search.error


def test_a_task_that_ignores_cancel_is_killed_after_the_grace_period(db_url, sessions, tmp_path):
    (search_id,) = _submit(sessions, 1, corpus="ignore-cancel", epochs=1000)
    backend = ThreadBackend()
    slow = functools.partial(fake_search, step_seconds=0.05)
    dispatcher = Dispatcher(
        _settings(db_url, tmp_path, lease_seconds=3.0),
        sessions,
        backend=backend,
        search_fn=slow,
        cancel_grace=0.5,
    ).start()
    try:
        wait_until(lambda: repo.list_trials(sessions, search_id).total > 0)
        repo.request_cancel(sessions, search_id)
        wait_until(lambda: status_of(sessions, search_id) == SearchStatus.CANCELLED, timeout=10)
    finally:
        dispatcher.stop()
    assert backend.cancelled, "the task was force-cancelled"
    events = [e.message for e in repo.events_after(sessions, search_id, limit=1000)]
    assert any("its task was killed" in m for m in events)


def test_a_task_that_fails_before_its_runner_records_anything_fails_the_search(db_url, sessions, tmp_path):
    (search_id,) = _submit(sessions, 1)

    class Broken(ThreadBackend):
        def submit(self, search_id, config, gpus, cpus, search_fn):
            from workers.ray_backend import Outcome, Reaped

            self._next += 1
            self.results[self._next] = Reaped(Outcome.ERROR, "ModuleNotFoundError: No module named 'nas'")
            return self._next

    dispatcher = Dispatcher(_settings(db_url, tmp_path), sessions, backend=Broken())
    dispatcher.poll_once()
    dispatcher.poll_once()
    search = repo.get_search(sessions, search_id)
    assert search.status == SearchStatus.FAILED
    assert search.error == "the worker could not run the search: ModuleNotFoundError: No module named 'nas'"


def test_a_search_that_cannot_be_submitted_fails_with_the_reason(db_url, sessions, tmp_path):
    (search_id,) = _submit(sessions, 1)

    class Refusing(ThreadBackend):
        def submit(self, *args):
            raise ValueError("Resource request for 'GPU' must be a number")

    Dispatcher(_settings(db_url, tmp_path), sessions, backend=Refusing()).poll_once()
    search = repo.get_search(sessions, search_id)
    assert search.status == SearchStatus.FAILED and "must be a number" in search.error


def test_gpus_and_cpus_from_the_spec_reach_the_backend(db_url, sessions, tmp_path):
    _submit(sessions, 1, gpus=2)
    seen = {}

    class Recording(ThreadBackend):
        def cpus_per_search(self, gpus, max_running):
            return 3

        def submit(self, search_id, config, gpus, cpus, search_fn):
            seen.update(gpus=gpus, cpus=cpus, threads=config.threads, owner=config.owner)
            return 1

    dispatcher = Dispatcher(_settings(db_url, tmp_path), sessions, backend=Recording(), owner="d1")
    dispatcher.poll_once()
    assert seen == {"gpus": 2.0, "cpus": 3, "threads": 3, "owner": "d1#1"}


def test_a_tpe_asha_search_holds_no_gpu_itself_its_trials_do(db_url, sessions, tmp_path):
    from pathlib import Path

    from nas.spec import CorpusSpec, TpeAshaSearch

    spec = TpeAshaSearch(corpus=CorpusSpec(name="ravdess", root=Path("/data/ravdess")), device="cuda", gpus=1)
    repo.create_search(sessions, spec.model_dump(mode="json"), "tpe", "tpe-asha")
    seen = []

    class Recording(ThreadBackend):
        def submit(self, search_id, config, gpus, cpus, search_fn):
            seen.append(gpus)
            return 1

    Dispatcher(_settings(db_url, tmp_path), sessions, backend=Recording()).poll_once()
    # A driver holding the GPU its trials wait for would deadlock them (Ray keeps a blocked task's GPUs).
    assert seen == [0]


def test_a_hyperband_search_holds_neither_cpu_nor_gpu_itself_its_tune_trials_do(db_url, sessions, tmp_path):
    from pathlib import Path

    from nas.spec import CorpusSpec, HyperbandSearch

    spec = HyperbandSearch(corpus=CorpusSpec(name="ravdess", root=Path("/data/ravdess")), device="cuda", gpus=1)
    repo.create_search(sessions, spec.model_dump(mode="json"), "hyperband", "hyperband")
    seen = []

    class TwoCpus(ThreadBackend):
        def cpus_per_search(self, gpus, max_running):
            return 2  # the whole of a 2-CPU machine

        def submit(self, search_id, config, gpus, cpus, search_fn):
            seen.append((gpus, cpus, config.threads))
            return 1

    Dispatcher(_settings(db_url, tmp_path), sessions, backend=TwoCpus()).poll_once()
    # A driver holding both CPUs would leave every 1-CPU Tune trial pending forever.
    assert seen == [(0, 0, 1)]


@pytest.mark.parametrize("poll", [0.05])
def test_stop_returns_promptly_and_leaves_running_searches_to_their_lease(db_url, sessions, tmp_path, poll):
    (search_id,) = _submit(sessions, 1, epochs=1000)
    backend = ThreadBackend()
    slow = functools.partial(fake_search, step_seconds=0.05)
    dispatcher = Dispatcher(
        _settings(db_url, tmp_path, poll_seconds=poll), sessions, backend=backend, search_fn=slow
    ).start()
    wait_until(lambda: repo.list_trials(sessions, search_id).total > 0)
    started = time.monotonic()
    dispatcher.stop()
    assert time.monotonic() - started < 5
    assert status_of(sessions, search_id) == SearchStatus.RUNNING  # its lease decides what happens next
    repo.request_cancel(sessions, search_id)  # let the abandoned runner thread stop
    wait_until(lambda: status_of(sessions, search_id) == SearchStatus.CANCELLED)
