"""Submission latency: POST /searches for a new search shape, one at a time and 200 at once, before and after.

Each code version (this checkout, and the code before a change: a checkout at `--before`, e.g. a git worktree
made with `git worktree add /tmp/sub-before <commit>`) serves its controller (`api.main:create_app`) under
uvicorn on 127.0.0.1 with a SQLite study database in a fresh temporary folder. Every submission is a new search shape
(the `emodarts-demo` preset with its own batch size and SeqNN width), so nothing computed for an earlier shape
is reused, and sets `options.memory_limit_gb`, which makes the new code check the supernet's counted memory
estimate at submission (the old code leaves memory to the worker). A submission reads the RAVDESS corpus
listing (no audio decoded), checks the folds and their splits, and inserts the row.

- one at a time: a keep-alive connection, `--sequential` requests after 3 warm-up requests;
- at once: `--concurrent` requests started together from an httpx async client, one connection each;
  latency per request from its start, and the time until the last answered.

Beside the latencies, the server process's CPU time per request in each phase (from /proc: what the other
jobs on a shared machine do not change) and the client's CPU time in the burst (it shares the machine).

Beside them, the measured estimate (the supernet built and run forward, `nas.darts.memory.measure_search_memory`:
what issue 15 timed at 6.7-12.5 s per new shape in the controller) and the counted one
(`nas.darts.footprint.estimate_search_memory`), timed in this process for a new shape of two presets.

    .venv/bin/python -m benchmarks.submission [--before /tmp/sub-before] [--sequential 100] [--concurrent 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.api_latency import RAVDESS, REPO, percentiles, start_server
from benchmarks.machine import cpu_model

RESULTS = REPO / "benchmarks" / "results" / "submission.json"


def body(i: int) -> dict[str, Any]:
    """Submission `i`, of a shape no other `i` has: the demo preset with its own batch size and SeqNN width."""
    overrides = {"options.batch_size": 1 + i % 32, "space.seq_hidden": 8 + i // 32, "options.memory_limit_gb": 64}
    return {
        "name": f"bench {i}",
        "preset": "emodarts-demo",
        "corpus": {"name": "ravdess", "root": str(RAVDESS), "classes": ["neutral", "happy", "sad"]},
        "overrides": overrides,
        "folds": {"n_folds": 6, "only": [0]},
        "seed": i,
    }


def sequential(url: str, first: int, n: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, timeout=300) as http:
        for i in range(first, first + n):
            start = time.perf_counter()
            response = http.post("/searches", json=body(i))
            samples.append((time.perf_counter() - start) * 1000)
            if response.status_code != 201:
                raise SystemExit(f"unexpected {response.status_code}: {response.text[:500]}")
    return samples


async def concurrent(url: str, first: int, n: int) -> tuple[list[float], float]:
    """(each request's latency in ms, ms until the last one answered) for `n` submissions started together."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        start = time.perf_counter()

        async def one(i: int) -> float:
            response = await http.post("/searches", json=body(i))
            if response.status_code != 201:
                raise SystemExit(f"unexpected {response.status_code}: {response.text[:500]}")
            return (time.perf_counter() - start) * 1000

        samples = await asyncio.gather(*(one(i) for i in range(first, first + n)))
        return list(samples), (time.perf_counter() - start) * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sernas-submission-bench-") as tmp:
        data_dir = Path(tmp)
        server, url = start_server(data_dir, RAVDESS.parent, f"sqlite:///{data_dir / 'sernas.db'}", code)
        try:
            sequential(url, 0, 3)  # warm-up: imports, the first corpus read
            start_cpu = cpu_seconds(server.pid)
            one = sequential(url, 10, args.sequential)
            between_cpu, client_start = cpu_seconds(server.pid), time.process_time()
            many, wall = asyncio.run(concurrent(url, 10_000, args.concurrent))
            end_cpu, client_cpu = cpu_seconds(server.pid), time.process_time() - client_start
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "code": _describe(code),
        "load_average_at_start": load,
        "one_at_a_time_ms": percentiles(one),
        "concurrent_ms": percentiles(many),
        "concurrent_all_answered_ms": wall,
        "server_cpu_ms_per_request": {
            "one_at_a_time": (between_cpu - start_cpu) * 1000 / args.sequential,
            "concurrent": (end_cpu - between_cpu) * 1000 / args.concurrent,
        },
        "client_cpu_s_concurrent": client_cpu,
    }


def _describe(code: Path) -> str:
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain"], capture_output=True, text=True)
    return f"{code} at {commit.stdout.strip()}" + (" with uncommitted changes" if dirty.stdout.strip() else "")


def estimate_seconds() -> list[dict[str, Any]]:
    """The measured and the counted estimate of a new shape of two presets, timed in this process."""
    from nas.darts.footprint import estimate_search_memory
    from nas.darts.memory import measure_search_memory
    from search_spaces.darts import PRESETS

    rows = []
    for name, batch in (("emodarts-demo", 23), ("emodarts", 19)):
        sections = PRESETS[name][1]
        shape = (sections.space, sections.features.output_shape, 3, batch, sections.options.second_order)
        start = time.perf_counter()
        measured = measure_search_memory(*shape)
        measured_s = time.perf_counter() - start
        start = time.perf_counter()
        counted = estimate_search_memory(*shape)
        counted_s = time.perf_counter() - start
        rows.append(
            {
                "preset": name,
                "batch_size": batch,
                "measured_s": measured_s,
                "counted_s": counted_s,
                "measured_gb": measured.total_bytes / 2**30,
                "counted_gb": counted.total_bytes / 2**30,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=Path("/tmp/sub-before"), help="checkout of the old code")
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=200)
    args = parser.parse_args()
    if not (RAVDESS / "Actor_01").is_dir():
        raise SystemExit(f"RAVDESS not found at {RAVDESS}")
    if not (args.before / "api").is_dir():
        raise SystemExit(f"no checkout at {args.before}: git -C {REPO} worktree add {args.before} <commit>")

    load = os.getloadavg()
    runs = {"before": measure(args.before, args), "after": measure(REPO, args)}
    estimates = estimate_seconds()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "load_average_at_start": load[0],
            "load_average_at_end": os.getloadavg()[0],
        },
        "sequential": args.sequential,
        "concurrent": args.concurrent,
        "runs": runs,
        "estimate": estimates,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; load average {load[0]:.1f} at start")
    print("POST /searches, each a new search shape; milliseconds\n")
    print("| code | one at a time p50 | p99 | 200 at once p50 | p99 | all answered | server CPU ms/req, one / 200 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        one, many, cpu = run["one_at_a_time_ms"], run["concurrent_ms"], run["server_cpu_ms_per_request"]
        print(
            f"| {name} | {one['p50']:.1f} | {one['p99']:.1f} | {many['p50']:.0f} | {many['p99']:.0f} "
            f"| {run['concurrent_all_answered_ms']:.0f} | {cpu['one_at_a_time']:.1f} / {cpu['concurrent']:.1f} |"
        )
    print("\n| preset, new batch size | measured estimate s | counted estimate ms | measured GB | counted GB |")
    print("|---|---:|---:|---:|---:|")
    for row in estimates:
        print(
            f"| {row['preset']}, {row['batch_size']} | {row['measured_s']:.2f} | {row['counted_s'] * 1000:.3f} "
            f"| {row['measured_gb']:.2f} | {row['counted_gb']:.2f} |"
        )
    print(f"\nwritten to {RESULTS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
