"""A search asking one node for more than any node of the Ray cluster has: refused at submission once the
controller knows the cluster; failed at its claim (resumable) when it was queued before, so it never sits
`running` in Ray's queue holding the dispatch slot that the CPU searches behind it wait for. A search that a
node could hold, but none has free now (a GPU node the cluster may still add): `waiting` in Ray's queue,
holding no dispatch slot, started when the node joins, cancelled at once.

The dispatcher's own seam (`ThreadBackend(limits=...)`) stands in for Ray here; the last test serves the
embedded local Ray itself (slow, like the other Ray tests).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.service import create_service
from nas.settings import Settings
from nas.spec import CorpusSpec, TpeAshaSearch
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.api import api_settings, assert_error, field_locs, search_body
from tests.workers import ThreadBackend, fake_search, status_of, tiny_spec, wait_until
from workers.dispatcher import Dispatcher
from workers.ray_backend import NodeLimits, RayBackend

CPU_ONLY = NodeLimits({"CPU": 2.0, "memory": 8e9})
ONE_GPU = NodeLimits({"CPU": 2.0, "GPU": 1.0})
# An autoscaling cluster whose GPU node has not joined yet, then has.
GPU_NODE_TYPE = {"CPU": 2.0, "GPU": 1.0}
CPU_NODE_NOW = NodeLimits({"CPU": 2.0, "memory": 8e9}, free=({"CPU": 2.0, "memory": 8e9},))
GPU_NODE_JOINED = NodeLimits({"CPU": 2.0, "GPU": 1.0, "memory": 8e9}, free=({"CPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}))


def _queue(sessions, name: str, gpus: float = 0) -> str:
    return repo.create_search(sessions, tiny_spec(gpus=gpus, epochs=1).model_dump(mode="json"), name, "darts").id


# ---------------------------------------------------------------- what the cluster has


def test_node_limits_are_the_largest_alive_node_of_each_resource():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0, "memory": 6e10}},
        {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # a dead node places nothing
    ]
    assert NodeLimits.of(nodes) == NodeLimits({"CPU": 16.0, "GPU": 2.0, "memory": 6e10})
    assert NodeLimits.of([{"Alive": False, "Resources": {"CPU": 8.0}}]) is None


def test_a_node_the_cluster_may_add_counts_as_a_node_but_has_nothing_free():
    limits = CPU_NODE_NOW.with_node(GPU_NODE_TYPE)
    assert limits.largest == {"CPU": 2.0, "GPU": 1.0, "memory": 8e9}
    assert limits.refusals(tiny_spec(gpus=1)) == []
    assert not limits.fits_now({"GPU": 1.0, "CPU": 1.0}) and limits.fits_now({"GPU": 0.0, "CPU": 2.0})
    assert limits.fits_now({"GPU": 1.0}, spare={"GPU": 1.0})  # what a task that just ended held
    taken = GPU_NODE_JOINED.taking({"GPU": 1.0, "CPU": 1.0})
    assert taken.free == ({"CPU": 2.0}, {"CPU": 1.0, "GPU": 0.0}) and not taken.fits_now({"GPU": 1.0})


def test_a_cpu_search_needing_more_memory_than_any_node_has_is_refused_naming_the_batch_size():
    spec = tiny_spec()
    needs = spec.memory_estimate(3).total_bytes
    assert NodeLimits({"CPU": 2.0, "memory": needs * 1.01}).refusals(spec) == []
    ((field, why),) = NodeLimits({"CPU": 2.0, "memory": needs * 0.5}).refusals(spec)
    assert field == "options.batch_size"
    assert why.startswith("options.batch_size: this search needs about") and "on the largest node" in why
    assert "batch_size=" in why  # a batch size that fits
    assert NodeLimits({"CPU": 2.0, "GPU": 1.0, "memory": 1.0}).refusals(tiny_spec(gpus=1)) == []  # on the GPU


def test_refusals_name_the_field_what_the_cluster_has_and_what_to_do():
    corpus = CorpusSpec(name="ravdess", root=Path("/data/ravdess"))
    ((field, why),) = CPU_ONLY.refusals(tiny_spec(gpus=1))
    assert field == "gpus"
    assert why.startswith("gpus: 1 asked, but the cluster's nodes have at most 0 GPUs: set gpus to 0")
    assert CPU_ONLY.refusals(tiny_spec(gpus=0)) == []
    assert ONE_GPU.refusals(tiny_spec(gpus=0.5)) == []
    # A tpe-asha search holds no GPU itself, but each of its trials is a Ray task asking for `gpus`
    # and `options.trial_cpus` of one node.
    tpe = TpeAshaSearch(corpus=corpus, gpus=2)
    tpe = tpe.model_copy(update={"options": tpe.options.model_copy(update={"trial_cpus": 3.0})})
    refused = dict(ONE_GPU.refusals(tpe))
    assert set(refused) == {"gpus", "options.trial_cpus"}
    assert "at most 1 GPUs: lower gpus to 1 or less" in refused["gpus"]
    assert "options.trial_cpus: 3 asked, but the cluster's nodes have at most 2 CPUs" in refused["options.trial_cpus"]


# ---------------------------------------------------------------- the dispatcher


def _dispatcher(db_url: str, tmp_path: Path, sessions, backend: ThreadBackend, **overrides) -> Dispatcher:
    values = {"data_dir": tmp_path, "database_url": db_url, "lease_seconds": 30.0, "poll_seconds": 0.05}
    settings = Settings(**(values | overrides))
    return Dispatcher(settings, sessions, backend=backend, search_fn=functools.partial(fake_search, step_seconds=0))


def _run_to_the_end(dispatcher: Dispatcher, sessions, search_id: str) -> None:
    """Poll until the search is completed and its task reaped: its runner records the outcome a moment
    before its thread ends, and until then the task holds its dispatch slot."""
    wait_until(
        lambda: (
            (dispatcher.poll_once() or True)
            and status_of(sessions, search_id) == SearchStatus.COMPLETED
            and search_id not in dispatcher.tasks
        )
    )


def test_a_gpu_search_on_a_cpu_cluster_fails_at_its_claim_and_the_cpu_search_behind_it_runs(db_url, sessions, tmp_path):
    gpu, cpu = _queue(sessions, "gpu", gpus=1), _queue(sessions, "cpu")
    backend = ThreadBackend(limits=CPU_ONLY)
    dispatcher = _dispatcher(db_url, tmp_path, sessions, backend, max_running=1)

    assert dispatcher.poll_once() == [cpu]  # one poll: the only slot goes to the search that can run
    assert backend.submitted == [cpu]
    failed = repo.get_search(sessions, gpu)
    assert failed.status == SearchStatus.FAILED and failed.lease_owner is None
    assert "no node of the Ray cluster can run it: gpus: 1 asked" in failed.error
    assert "at most 0 GPUs" in failed.error and "resume it once the cluster has such a node" in failed.error
    _run_to_the_end(dispatcher, sessions, cpu)

    # Once a GPU node has joined, the failed search resumes and runs.
    backend.limits = ONE_GPU
    repo.resume(sessions, gpu)
    assert dispatcher.poll_once() == [gpu]
    _run_to_the_end(dispatcher, sessions, gpu)


def test_a_gpu_search_waits_for_the_node_the_cluster_may_add_and_the_cpu_search_behind_it_runs(
    db_url, sessions, tmp_path
):
    gpu, cpu = _queue(sessions, "gpu", gpus=1), _queue(sessions, "cpu")
    backend = ThreadBackend(limits=CPU_NODE_NOW)
    dispatcher = _dispatcher(db_url, tmp_path, sessions, backend, max_running=1, autoscale_node=GPU_NODE_TYPE)

    # The waiting search is in Ray's queue but holds no slot: the only slot goes to the CPU search.
    assert dispatcher.poll_once() == [gpu, cpu]
    assert status_of(sessions, gpu) == SearchStatus.WAITING and list(backend.pending) == [1]
    events = [e.message for e in repo.events_after(sessions, gpu)]
    assert any(m.startswith("waiting for resources: no node of the Ray cluster has 1 GPU, 1 CPU free") for m in events)
    _run_to_the_end(dispatcher, sessions, cpu)
    assert status_of(sessions, gpu) == SearchStatus.WAITING and repo.list_trials(sessions, gpu).total == 0

    backend.join(GPU_NODE_JOINED)  # Ray starts the pending task; its runner marks the search running
    _run_to_the_end(dispatcher, sessions, gpu)
    events = [e.message for e in repo.events_after(sessions, gpu, limit=1000)]
    assert "resources found: running" in events
    assert repo.get_search(sessions, gpu).attempts == 1


def test_a_waiting_search_is_cancelled_at_once_and_its_ray_task_withdrawn(db_url, sessions, tmp_path):
    gpu = _queue(sessions, "gpu", gpus=1)
    backend = ThreadBackend(limits=CPU_NODE_NOW)
    dispatcher = _dispatcher(db_url, tmp_path, sessions, backend, autoscale_node=GPU_NODE_TYPE)
    assert dispatcher.poll_once() == [gpu] and status_of(sessions, gpu) == SearchStatus.WAITING

    cancelled = repo.request_cancel(sessions, gpu)
    assert (cancelled.status, cancelled.lease_owner) == (SearchStatus.CANCELLED, None)
    dispatcher.poll_once()
    assert backend.cancelled == ["1"] and not backend.pending and not dispatcher.tasks
    backend.join(GPU_NODE_JOINED)  # the node joins: nothing of the cancelled search runs
    assert repo.list_trials(sessions, gpu).total == 0

    repo.resume(sessions, gpu)  # and it can be resumed, now that the node is there
    assert dispatcher.poll_once() == [gpu] and status_of(sessions, gpu) == SearchStatus.RUNNING
    _run_to_the_end(dispatcher, sessions, gpu)


def test_a_cluster_that_cannot_be_read_places_searches_as_before(db_url, sessions, tmp_path):
    gpu = _queue(sessions, "gpu", gpus=1)
    backend = ThreadBackend(limits=None)
    dispatcher = _dispatcher(db_url, tmp_path, sessions, backend)
    assert dispatcher.poll_once() == [gpu] and dispatcher.cluster is None
    _run_to_the_end(dispatcher, sessions, gpu)


# ---------------------------------------------------------------- the service


def _fast(limits: NodeLimits | None) -> ThreadBackend:
    return ThreadBackend(search_fn=functools.partial(fake_search, step_seconds=0), limits=limits)


class SlowToConnect(ThreadBackend):
    """A backend that connects once `release` is set: until then the service answers without knowing the
    cluster, as while a local Ray starts or a remote one is unreachable."""

    def __init__(self, limits: NodeLimits) -> None:
        super().__init__(search_fn=functools.partial(fake_search, step_seconds=0), limits=limits)
        self.release = threading.Event()

    def connect(self) -> None:
        assert self.release.wait(30), "the test never let the backend connect"


def _service(db_url: str, tmp_path: Path, ravdess_root: Path, backend: ThreadBackend, **fields) -> TestClient:
    settings = api_settings(db_url, tmp_path, ravdess_root, poll_seconds=0.05, lease_seconds=30.0, **fields)
    return TestClient(create_service(settings, backend=backend))


def test_the_service_refuses_a_search_no_node_of_its_cluster_can_run(db_url, tmp_path, ravdess_root):
    with _service(db_url, tmp_path, ravdess_root, _fast(CPU_ONLY)) as client:
        wait_until(lambda: client.app.state.dispatcher.cluster is not None)
        gpu = assert_error(client.post("/searches", json=search_body(ravdess_root, gpus=1)), 422, "invalid_config")
        assert field_locs(gpu) == [["body", "gpus"]]
        assert gpu["message"].startswith("gpus: 1 asked, but the cluster's nodes have at most 0 GPUs")

        tpe = search_body(ravdess_root, preset="bigru-mfcc-demo", overrides={"options.trial_cpus": 64})
        cpus = assert_error(client.post("/searches", json=tpe), 422, "invalid_config")
        assert field_locs(cpus) == [["body", "overrides", "options.trial_cpus"]]
        assert "at most 2 CPUs" in cpus["message"]

        cpu = client.post("/searches", json=search_body(ravdess_root, gpus=0))
        assert cpu.status_code == 201, cpu.text
        wait_until(lambda: client.get(f"/searches/{cpu.json()['id']}").json()["status"] == "completed")


def test_the_service_shows_a_search_waiting_for_a_node_and_cancels_it(db_url, tmp_path, ravdess_root):
    backend = _fast(CPU_NODE_NOW)
    with _service(db_url, tmp_path, ravdess_root, backend, autoscale_node=GPU_NODE_TYPE) as client:
        wait_until(lambda: client.app.state.dispatcher.cluster is not None)
        gpu = client.post("/searches", json=search_body(ravdess_root, gpus=1))
        assert gpu.status_code == 201, gpu.text  # not refused: the cluster may add a GPU node
        url = f"/searches/{gpu.json()['id']}"
        wait_until(lambda: client.get(url).json()["status"] == "waiting")
        cpu = client.post("/searches", json=search_body(ravdess_root, gpus=0))
        wait_until(lambda: client.get(f"/searches/{cpu.json()['id']}").json()["status"] == "completed")

        listed = client.get("/searches", params={"status": "waiting"}).json()
        assert [s["id"] for s in listed["items"]] == [gpu.json()["id"]]
        waiting = client.get(url).json()
        assert "cancel" in waiting["links"] and "resume" not in waiting["links"]
        cancelled = client.post(f"{url}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert "resume" in cancelled.json()["links"]
        wait_until(lambda: not backend.pending)  # the dispatcher withdrew its Ray task


def test_the_service_refuses_a_cpu_search_no_node_has_the_memory_for(db_url, tmp_path, ravdess_root):
    with _service(db_url, tmp_path, ravdess_root, _fast(CPU_ONLY)) as client:
        wait_until(lambda: client.app.state.dispatcher.cluster is not None)
        body = search_body(ravdess_root, gpus=0, overrides={"options.batch_size": 4096})
        error = assert_error(client.post("/searches", json=body), 422, "invalid_config")
        assert field_locs(error) == [["body", "overrides", "options.batch_size"]]
        assert "GB but only 7.5 GB is on the largest node of the Ray cluster" in error["message"]


def test_before_the_cluster_is_known_a_gpu_search_is_queued_and_cannot_block_the_cpu_search_behind_it(
    db_url, tmp_path, ravdess_root
):
    backend = SlowToConnect(limits=CPU_ONLY)
    with _service(db_url, tmp_path, ravdess_root, backend) as client:
        assert client.app.state.dispatcher.cluster is None
        gpu = client.post("/searches", json=search_body(ravdess_root, gpus=1))
        cpu = client.post("/searches", json=search_body(ravdess_root, gpus=0))
        assert (gpu.status_code, cpu.status_code) == (201, 201), (gpu.text, cpu.text)
        gpu_id, cpu_id = gpu.json()["id"], cpu.json()["id"]

        backend.release.set()  # Ray is up: the dispatcher reads the cluster and claims
        wait_until(lambda: client.get(f"/searches/{cpu_id}").json()["status"] == "completed")
        failed = client.get(f"/searches/{gpu_id}").json()
        assert failed["status"] == "failed" and "at most 0 GPUs" in failed["error"]
        assert backend.submitted == [cpu_id]


@pytest.mark.slow
def test_the_embedded_ray_refuses_more_gpus_than_this_machine_has(db_url, tmp_path, ravdess_root):
    backend = RayBackend(num_cpus=1)
    with _service(db_url, tmp_path, ravdess_root, backend) as client:
        wait_until(lambda: client.app.state.dispatcher.cluster is not None, timeout=120)
        have = client.app.state.dispatcher.cluster.largest.get("GPU", 0.0)
        body = search_body(ravdess_root, gpus=have + 1, device="auto")
        error = assert_error(client.post("/searches", json=body), 422, "invalid_config")
        assert field_locs(error) == [["body", "gpus"]]
        assert f"gpus: {have + 1:g} asked, but the cluster's nodes have at most {have:g} GPUs" in error["message"]
