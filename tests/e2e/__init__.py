"""End-to-end harness: the real service (`sernas serve`: controller + dispatcher + local Ray) in a
subprocess on a free loopback port, driven over real HTTP.

The server runs in a session of its own, so a test can SIGKILL the whole process group (a crashed
controller) or one Ray worker (a crashed search). Its output goes to `<tmp>/server-<n>.log`,
printed when a test fails.

Developer aid: SERNAS_E2E_FAKE_SEARCH=1 runs the same tests with the fake search of
tests.workers (seconds instead of minutes; the API's corpus checks are skipped) to debug the plumbing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.live import free_port

REPO = Path(__file__).resolve().parents[2]
FAKE = os.environ.get("SERNAS_E2E_FAKE_SEARCH") == "1"
FINISHED = ("completed", "failed", "cancelled")
ACTORS = [f"Actor_{i:02d}" for i in range(1, 9)]  # 4 speaker folds of one male + one female
CLASSES = {"02": "calm", "05": "angry"}  # RAVDESS emotion codes


def tiny_search(ravdess_root: Path, name: str = "e2e", search_epochs: int = 2, train_epochs: int = 12) -> dict:
    """A tiny real emoDARTS search: 2 classes, 8 actors, fold 0 of 4, and a supernet of a few ops per edge
    (the demo preset's 9 CNN and 14 SeqNN candidates make a search epoch take about 40 s on 2 CPUs)."""
    return {
        "name": name,
        "preset": "emodarts-demo",
        "strategy": "darts",
        "corpus": {
            "name": "ravdess",
            "root": str(ravdess_root),
            "classes": sorted(set(CLASSES.values())),
            "speakers": ACTORS,
        },
        "overrides": {
            "space.cnn_ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"],
            "space.seq_ops": ["skip_connect", "rnn_1"],
            "options.search_epochs": search_epochs,
            "options.train_epochs": train_epochs,
            "options.patience": 6,
            "options.search_fraction": 0.5,
        },
        "folds": {"n_folds": 4, "only": [0]},
    }


class Server:
    """`sernas serve` in a subprocess; `start()` waits until the API answers and Ray is connected."""

    def __init__(self, tmp_path: Path, db_url: str, data_roots: list[Path], **settings: Any) -> None:
        self.tmp_path, self.port = tmp_path, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "SERNAS_DATA_DIR": str(tmp_path / "sernas"),
            "SERNAS_DATABASE_URL": db_url,
            "SERNAS_DATA_ROOTS": "[" + ",".join(f'"{p}"' for p in data_roots) + "]",
            "SERNAS_LEASE_SECONDS": "4",
            "SERNAS_POLL_SECONDS": "0.5",
            **{f"SERNAS_{k.upper()}": str(v) for k, v in settings.items()},
        }
        for name in ("RAY_ADDRESS", "SERNAS_RAY_ADDRESS"):  # the embedded local Ray, always
            self.env.pop(name, None)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.logs: list[Path] = []

    def start(self, timeout: float = 180.0) -> Server:
        self.starts += 1
        log = self.tmp_path / f"server-{self.starts}.log"
        self.logs.append(log)
        if FAKE:
            command = [sys.executable, "-c", "import tests.e2e as e; e.serve_fake()", str(self.port)]
        else:
            command = [
                sys.executable,
                "-m",
                "api.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while "polling every" not in log.read_text():
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            assert time.monotonic() < deadline, f"the server did not start:\n{self.output()}"
            time.sleep(0.2)
        assert httpx.get(f"{self.url}/health", timeout=10).json()["status"] == "ok"
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server's whole process group (the controller and its local Ray)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=60)
        # Ray's workers live in sessions of their own; they exit when their raylet is gone.

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)

    def output(self) -> str:
        return "\n".join(f"----- {log.name}\n{log.read_text()[-6000:]}" for log in self.logs if log.exists())

    # ------------------------------------------------------------ HTTP helpers

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict | None = None, expect: int = 200) -> Any:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=120)
        assert response.status_code == expect, response.text
        return response.json()

    def submit(self, body: dict) -> str:
        return self.post("/searches", body, expect=201)["id"]

    def search(self, search_id: str) -> dict:
        return self.get(f"/searches/{search_id}")

    def wait_for(self, search_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 1200.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            search = self.search(search_id)
            if search["status"] in statuses:
                return search
            assert time.monotonic() < deadline, f"search {search_id} still {search['status']}:\n{self.output()}"
            time.sleep(1.0)

    def all_trials(self, search_id: str, limit: int = 1) -> list[dict]:
        """Every trial of a search, page by page (`limit` per page) through next_cursor."""
        items, cursor = [], None
        while True:
            params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            page = self.get(f"/searches/{search_id}/trials", **params)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                assert len(items) == page["total"]
                return items

    def steps(self, trial_id: int) -> list[int]:
        return [s["step"] for s in self.get(f"/trials/{trial_id}")["steps"]]


def wait_until(condition: Callable[[], Any], timeout: float = 600.0, message: str = "timed out") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


def worker_pids(sessions: Any, search_id: str) -> list[int]:
    """The pids of the Ray workers that ran a search, from its "worker started" events."""
    from nas.store import repository

    events = repository.events_after(sessions, search_id, limit=10_000)
    found = (re.match(r"worker started: host \S+ pid (\d+)", e.message) for e in events)
    return [int(m.group(1)) for m in found if m]


def event_messages(sessions: Any, search_id: str) -> list[str]:
    from nas.store import repository

    return [e.message for e in repository.events_after(sessions, search_id, limit=10_000)]


def serve_fake() -> None:
    """SERNAS_E2E_FAKE_SEARCH=1: the service with the fake search and without the API's corpus checks."""
    import functools
    import logging

    import uvicorn

    import api.routes.searches
    from api.service import create_service
    from nas.settings import Settings
    from tests.workers import fake_search

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    api.routes.searches.check_runnable = lambda *args: None
    app = create_service(Settings(), search_fn=functools.partial(fake_search, step_seconds=0.5))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
