"""REST latency: POST /searches, and GET /searches/{id}/trials with 100,000 stored trials.

The app runs under uvicorn in its own process on 127.0.0.1 (a SQLite study database in a
temporary folder, unless --database-url is given); this process is the client and sends one
request at a time over a keep-alive connection, so the figures are per-request latencies.

- Submission latency is everything POST /searches does before it answers: build the spec from
  the `emodarts-demo` preset, confine the corpus root, read the RAVDESS corpus (file names only,
  no audio decoded), the strategy's memory estimate, and the INSERT. The estimate builds the
  supernet and runs it forward, so the API remembers its outcome per search shape (space,
  features, options, class count) for a few minutes: the steady-state row reuses it, the
  "new shape" row (a different batch size each time) pays for it. The very first submission
  also imports torch and is reported on its own.
- The trials listing is measured on one search holding --trials trials (bulk-inserted with
  SQLAlchemy core), for several sorts and filters, on the first page and deep in the listing
  (keyset cursors: page 1,000 costs what page 1 costs).

    .venv/bin/python -m benchmarks.api_latency [--submissions 200] [--trials 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from benchmarks.machine import cpu_model
from nas.store.db import make_engine
from nas.store.models import Trial
from tests.live import free_port

REPO = Path(__file__).resolve().parents[1]
RAVDESS = REPO.parent / "shared" / "data" / "ravdess"


def start_server(
    data_dir: Path, data_root: Path, database_url: str | None, code: Path = REPO
) -> tuple[subprocess.Popen, str]:
    """The controller of the checkout at `code` (default: this one) under uvicorn on loopback."""
    port = free_port()
    env = {
        **os.environ,
        "SERNAS_DATA_DIR": str(data_dir),
        "SERNAS_DATA_ROOTS": json.dumps([str(data_root)]),
    }
    env.pop("SERNAS_API_TOKEN", None)
    if database_url:
        env["SERNAS_DATABASE_URL"] = database_url
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command, cwd=code, env={**env, "PYTHONPATH": str(code)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.1)
    server.terminate()
    raise SystemExit("the server did not start within 120 s")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cut[49], "p95": cut[94], "p99": cut[98], "max": ordered[-1], "n": len(ordered)}


def timed(call: Callable[[], httpx.Response], expect: int) -> float:
    start = time.perf_counter()
    response = call()
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != expect:
        raise SystemExit(f"unexpected {response.status_code}: {response.text[:500]}")
    return elapsed


def submission_body(i: int, data_root: Path, batch_size: int = 16) -> dict[str, Any]:
    return {
        "name": f"bench {i}",
        "preset": "emodarts-demo",
        "corpus": {"name": "ravdess", "root": str(data_root / RAVDESS.name), "classes": ["neutral", "happy"]},
        "overrides": {"options.batch_size": batch_size},
        "folds": {"only": [0]},
        "seed": i,
    }


def bulk_insert_trials(database_url: str, search_id: str, n: int) -> float:
    """`n` trials like a long search leaves them: 90% complete with metrics, the rest running."""
    engine = make_engine(database_url)
    rng = random.Random(0)
    start = time.perf_counter()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        complete = i % 10 != 9
        ua, wa = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)
        params = rng.randint(10_000, 2_000_000)
        rows.append(
            {
                "search_id": search_id,
                "key": f"trial-{i}",
                "params": {"lr": rng.uniform(1e-4, 1e-1), "nodes": rng.randint(1, 4)},
                "state": "complete" if complete else "running",
                "metrics": {"ua": ua, "wa": wa, "macro_f1": ua - 0.02, "params": params} if complete else None,
                "genome": None,
                "ua": ua if complete else None,
                "wa": wa if complete else None,
                "n_params": params if complete else None,
                "fold": i % 6,
                "stage": "search" if i % 2 else "retrain",
                "started_at": t0 + timedelta(seconds=i),
                "finished_at": t0 + timedelta(seconds=i + 1) if complete else None,
            }
        )
    with engine.begin() as connection:
        for offset in range(0, n, 10_000):
            connection.execute(insert(Trial), rows[offset : offset + 10_000])
    engine.dispose()
    return time.perf_counter() - start


def walk_cursors(http: httpx.Client, path: str, params: dict[str, Any], pages: int) -> list[str]:
    """Cursors of the first `pages` pages of a listing (to time requests deep in it)."""
    cursors = []
    cursor = None
    for _ in range(pages):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        cursor = http.get(path, params=query).json()["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    return cursors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--new-shapes", type=int, default=5, help="submissions that need a new estimate")
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per listing case")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    args = parser.parse_args()
    if not (RAVDESS / "Actor_01").is_dir():
        raise SystemExit(f"RAVDESS not found at {RAVDESS}")

    with tempfile.TemporaryDirectory(prefix="sernas-api-bench-") as tmp:
        data_dir = Path(tmp)
        database_url = args.database_url or f"sqlite:///{data_dir / 'sernas.db'}"
        server, url = start_server(data_dir, RAVDESS.parent, database_url)
        try:
            rows = run(url, database_url, args)
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"\nmachine: {os.cpu_count()} CPUs, {cpu_model()}, {platform.platform()}")
    versions = f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    print(f"{versions}, database {_backend(database_url)}")
    print("one client, sequential requests over a keep-alive connection; milliseconds\n")
    print("| request | n | p50 | p95 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, stats in rows:
        print(
            f"| {name} | {stats['n']} | {stats['p50']:.1f} | {stats['p95']:.1f} | "
            f"{stats['p99']:.1f} | {stats['max']:.1f} |"
        )


def _backend(url: str) -> str:
    return url.split(":", 1)[0]


def run(url: str, database_url: str, args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    rows: list[tuple[str, dict[str, float]]] = []
    with httpx.Client(base_url=url, timeout=120) as http:

        def submit(i: int, batch_size: int = 16) -> httpx.Response:
            return http.post("/searches", json=submission_body(i, RAVDESS.parent, batch_size))

        first = timed(lambda: submit(0), 201)
        print(f"first submission (imports torch for the memory estimate): {first:.0f} ms")
        samples = []
        for i in range(1, args.submissions + 1):
            samples.append(timed(lambda i=i: submit(i), 201))
        rows.append(("POST /searches, known shape (spec, corpus read, insert)", percentiles(samples)))
        samples = []
        for i in range(args.new_shapes):
            samples.append(timed(lambda i=i: submit(10**5 + i, batch_size=17 + i), 201))
        rows.append(("POST /searches, new shape (+ memory estimate)", percentiles(samples)))

        search_id = submit(10**6).json()["id"]
        seconds = bulk_insert_trials(database_url, search_id, args.trials)
        print(f"inserted {args.trials:,} trials in {seconds:.1f} s")
        path = f"/searches/{search_id}/trials"
        cases: list[tuple[str, dict[str, Any]]] = [
            ("id", {"sort": "id"}),
            ("-ua", {"sort": "-ua"}),
            ("n_params", {"sort": "n_params"}),
            ("-wa, stage=retrain", {"sort": "-wa", "stage": "retrain"}),
            ("-ua, state=complete, min_ua=0.7", {"sort": "-ua", "state": "complete", "min_ua": 0.7}),
        ]
        for label, case in cases:
            params = {**case, "limit": 50}
            samples = []
            for _ in range(args.requests):
                samples.append(timed(lambda p=params: http.get(path, params=p), 200))
            rows.append((f"GET trials sort={label}, first page", percentiles(samples)))
            if label in ("-ua", "id"):
                cursors = walk_cursors(http, path, params, 200)
                deep = cursors[len(cursors) // 2 :]
                samples = []
                for i in range(args.requests):
                    query = {**params, "cursor": deep[i % len(deep)]}
                    samples.append(timed(lambda q=query: http.get(path, params=q), 200))
                rows.append((f"GET trials sort={label}, pages 100-200 (cursor)", percentiles(samples)))
    return rows


if __name__ == "__main__":
    main()
