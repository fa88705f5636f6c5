"""The dispatcher on a real local Ray with the fake search: GPUs, a SIGKILLed worker, a task no node can
hold, a task waiting for a busy GPU."""

from __future__ import annotations

import functools
import os
import re
import signal
import time

import pytest

from nas.settings import Settings
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.workers import fake_search, has_ended, tiny_spec, wait_until
from workers.dispatcher import Dispatcher
from workers.ray_backend import RayBackend


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (ray.init once per process), declaring one GPU it does not have:
    enough for Ray to schedule GPU tasks and set CUDA_VISIBLE_DEVICES, which is what is tested."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only (if not imported yet)
    import ray

    ray.shutdown()  # the local Ray an earlier in-process search started (e.g. hyperband's), which has no GPU
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


RAY_SECONDS = 120.0  # how long a Ray task may take to start and end on a loaded 2-core machine


def _dispatcher(db_url, tmp_path, search_fn, **overrides) -> Dispatcher:
    # A lease long enough that a loaded machine does not starve the worker's renewals (a second attempt).
    values = {"data_dir": tmp_path, "database_url": db_url, "lease_seconds": 6.0, "poll_seconds": 0.2}
    settings = Settings(**(values | overrides))
    return Dispatcher(settings, backend=RayBackend(), search_fn=search_fn)


def _events(sessions, search_id: str) -> list[str]:
    return [e.message for e in repo.events_after(sessions, search_id, limit=1000)]


def _worker_pids(sessions, search_id: str) -> list[int]:
    found = (re.search(r"^worker started: host \S+ pid (\d+)", m) for m in _events(sessions, search_id))
    return [int(m.group(1)) for m in found if m]


def test_searches_run_in_ray_workers_with_the_gpus_they_reserve(ray_cluster, db_url, sessions, tmp_path):
    cpu = repo.create_search(sessions, tiny_spec(epochs=1).model_dump(mode="json"), "cpu", "darts").id
    gpu = repo.create_search(sessions, tiny_spec(gpus=1, epochs=1).model_dump(mode="json"), "gpu", "darts").id
    dispatcher = _dispatcher(db_url, tmp_path, fake_search, max_running=2).start()
    try:
        wait_until(lambda: has_ended(sessions, cpu) and has_ended(sessions, gpu), timeout=RAY_SECONDS)
    finally:
        dispatcher.stop()
    for search_id in (cpu, gpu):
        search = repo.get_search(sessions, search_id)
        assert (search.status, search.attempts) == (SearchStatus.COMPLETED, 1), search.error
        (pid,) = _worker_pids(sessions, search_id)
        assert pid != os.getpid()
    started = {sid: next(m for m in _events(sessions, sid) if m.startswith("worker started")) for sid in (cpu, gpu)}
    assert "CUDA_VISIBLE_DEVICES='0'" in started[gpu]
    assert "CUDA_VISIBLE_DEVICES='0'" not in started[cpu]
    assert any("1 GPU, 1 CPU" in m for m in _events(sessions, gpu))


def test_a_sigkilled_worker_is_requeued_and_the_search_resumes_from_its_checkpoint(
    ray_cluster, db_url, sessions, tmp_path
):
    search_id = repo.create_search(sessions, tiny_spec(epochs=3).model_dump(mode="json"), "kill", "darts").id
    slow = functools.partial(fake_search, step_seconds=0.6)
    dispatcher = _dispatcher(db_url, tmp_path, slow).start()
    try:
        wait_until(
            lambda: any(t.key == "fold-0/search" for t in repo.list_trials(sessions, search_id).items),
            timeout=RAY_SECONDS,
        )
        trial = next(t for t in repo.list_trials(sessions, search_id).items if t.key == "fold-0/search")
        wait_until(lambda: len(repo.get_trial(sessions, trial.id).steps) >= 2, timeout=RAY_SECONDS)
        (pid,) = _worker_pids(sessions, search_id)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: has_ended(sessions, search_id), timeout=90)
    finally:
        dispatcher.stop()
    search = repo.get_search(sessions, search_id)
    assert (search.status, search.attempts) == (SearchStatus.COMPLETED, 2), search.error
    first, second = _worker_pids(sessions, search_id)
    assert first == pid and second != pid
    trials = repo.list_trials(sessions, search_id).items
    assert sorted(t.key for t in trials) == [
        "fold-0/retrain",
        "fold-0/search",
        "fold-1/retrain",
        "fold-1/search",
    ]
    for t in trials:
        assert [s.step for s in repo.get_trial(sessions, t.id).steps] == [1, 2, 3]
    events = _events(sessions, search_id)
    restarts = [m for m in events if m.startswith("fake: fold-0/search from epoch")]
    assert len(restarts) == 2 and not restarts[1].startswith("fake: fold-0/search from epoch 1 ")
    assert any("worker died" in m for m in events)


def test_a_search_no_node_can_hold_fails_at_once_and_the_cpu_search_behind_it_runs(
    ray_cluster, db_url, sessions, tmp_path
):
    too_big = repo.create_search(sessions, tiny_spec(gpus=4, epochs=1).model_dump(mode="json"), "4 GPUs", "darts").id
    cpu = repo.create_search(sessions, tiny_spec(epochs=1).model_dump(mode="json"), "cpu", "darts").id
    dispatcher = _dispatcher(db_url, tmp_path, fake_search, max_running=1).start()
    try:
        wait_until(lambda: has_ended(sessions, too_big) and has_ended(sessions, cpu), timeout=RAY_SECONDS)
    finally:
        dispatcher.stop()
    assert dispatcher.cluster is not None and dispatcher.cluster.largest["GPU"] == 1  # read from ray.nodes()
    failed = repo.get_search(sessions, too_big)
    assert failed.status == SearchStatus.FAILED and _worker_pids(sessions, too_big) == []
    assert "gpus: 4 asked, but the cluster's nodes have at most 1 GPUs" in failed.error
    assert repo.get_search(sessions, cpu).status == SearchStatus.COMPLETED


def test_a_search_waiting_for_a_busy_gpu_keeps_its_lease_and_can_be_cancelled(ray_cluster, db_url, sessions, tmp_path):
    busy = repo.create_search(sessions, tiny_spec(gpus=1, epochs=1000).model_dump(mode="json"), "busy", "darts").id
    waiting = repo.create_search(sessions, tiny_spec(gpus=1, epochs=1).model_dump(mode="json"), "next", "darts").id
    settings = Settings(data_dir=tmp_path, database_url=db_url, lease_seconds=1.0, poll_seconds=0.1, max_running=2)
    slow = functools.partial(fake_search, step_seconds=0.1)
    dispatcher = Dispatcher(settings, backend=RayBackend(), search_fn=slow, cancel_grace=1.0).start()
    try:
        wait_until(lambda: _worker_pids(sessions, busy) != [], timeout=RAY_SECONDS)  # it holds the cluster's only GPU
        # The GPU exists, busy.
        wait_until(lambda: repo.get_search(sessions, waiting).status == SearchStatus.WAITING, timeout=RAY_SECONDS)
        time.sleep(3.5)  # several leases: the dispatcher renews while Ray waits for the GPU to be free
        search = repo.get_search(sessions, waiting)
        assert (search.status, search.attempts) == (SearchStatus.WAITING, 1)
        assert _worker_pids(sessions, waiting) == []
        for search_id in (waiting, busy):
            repo.request_cancel(sessions, search_id)
        wait_until(lambda: has_ended(sessions, waiting) and has_ended(sessions, busy), timeout=15)
    finally:
        dispatcher.stop()
    assert repo.get_search(sessions, waiting).status == SearchStatus.CANCELLED
