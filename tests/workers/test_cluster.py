"""Joining an existing Ray cluster (`ray start`) through `ray_address` (SERNAS_RAY_ADDRESS), and the
`sernas worker` command that joins a GPU node to one.

Only loopback here: Ray's single-machine mode binds 127.0.0.1 but refuses a second node, so the
cluster is one `ray start --head` node declaring one GPU it does not have (enough for Ray to place
a search that reserves a GPU and set CUDA_VISIBLE_DEVICES, which is what is tested), and `sernas
worker` is checked for the exact `ray start --address` command it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.live import free_port
from tests.workers import tiny_spec

REPO = Path(__file__).resolve().parents[2]
# Ray's single-machine mode (every node and driver binds 127.0.0.1), with token authentication on
# both sides (the token from ~/.ray/auth_token, which Ray creates when missing).
ENV = {
    **os.environ,
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "PYTHONPATH": str(REPO),
}
ENV.pop("RAY_ADDRESS", None)

DISPATCH = """
import logging, sys, time
from nas.settings import Settings
from nas.store import repository
from tests.workers import fake_search
from workers.dispatcher import Dispatcher

logging.basicConfig(level=logging.INFO)
settings = Settings(data_dir=sys.argv[1], database_url=sys.argv[2], ray_address=sys.argv[3],
                    lease_seconds=5, poll_seconds=0.2, max_running=2)
dispatcher = Dispatcher(settings, search_fn=fake_search).start()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    states = [repository.get_search(dispatcher.sessions, i).status for i in sys.argv[4:]]
    if all(s.value in ("completed", "failed", "cancelled") for s in states):
        break
    time.sleep(0.3)
dispatcher.stop()
"""


@contextlib.contextmanager
def _process(command: list[str], log: Path):
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)


def test_a_dispatcher_joins_an_existing_cluster_whose_gpus_run_the_searches_that_reserve_them(
    db_url, sessions, tmp_path
):
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray = str(Path(sys.executable).parent / "ray")
    # A temp dir of its own: `ray start` records its address there, not in /tmp/ray where a plain
    # ray.init() elsewhere on this machine would find it and connect to it.
    temp_dir = tempfile.mkdtemp(prefix="sernas-ray-", dir="/tmp")
    head_cmd = [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=1"]
    head_cmd += ["--include-dashboard=false", f"--temp-dir={temp_dir}", "--block"]
    cpu = repo.create_search(sessions, tiny_spec(epochs=1).model_dump(mode="json"), "cpu", "darts").id
    gpu = repo.create_search(sessions, tiny_spec(gpus=1, epochs=1).model_dump(mode="json"), "gpu", "darts").id

    try:
        with _process(head_cmd, tmp_path / "head.log") as head:
            _wait_for_line(tmp_path / "head.log", "Ray runtime started", head)
            dispatch = [sys.executable, "-c", DISPATCH, str(tmp_path / "data"), db_url, address, cpu, gpu]
            done = subprocess.run(dispatch, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "connected to the Ray cluster at " + address in done.stderr
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)

    for search_id in (cpu, gpu):
        search = repo.get_search(sessions, search_id)
        assert search.status == SearchStatus.COMPLETED, (search.error, done.stderr[-3000:])
    started = {
        sid: next(e.message for e in repo.events_after(sessions, sid) if e.message.startswith("worker started"))
        for sid in (cpu, gpu)
    }
    assert "CUDA_VISIBLE_DEVICES='0'" in started[gpu] and " ray node " in started[gpu]
    assert "CUDA_VISIBLE_DEVICES='0'" not in started[cpu]
