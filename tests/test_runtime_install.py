"""A plain `pip install` (the runtime dependencies, no dev extra) runs the service and its client commands.

A fresh virtual environment (no system site-packages) gets the package built from a copy of this checkout,
with pip's usual sources (its cache, the torch 2.13.0 file on this machine's disk). Its own `sernas serve`
serves on loopback, and its `sernas submit`, `status` and `download` talk to it: none may fail on a module
that only the dev extra brings (as httpx once did).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from nas.store import repository as repo
from nas.store.db import make_engine, session_factory
from nas.store.models import SearchStatus
from tests.api.test_export import write_model
from tests.live import free_port

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "nas", "search_spaces", "api", "workers")


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a virtual environment with `pip install <this checkout>` and nothing else."""
    root = tmp_path_factory.mktemp("runtime")
    source = root / "source"  # a copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    bin_dir = root / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "pip"), "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    return bin_dir


def _env(**settings: str) -> dict[str, str]:
    """This process's environment without what would reach the checkout or the dev venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {f"SERNAS_{k.upper()}": v for k, v in settings.items()}


def test_the_dev_tools_are_not_there(runtime_venv: Path):
    absent = subprocess.run([str(runtime_venv / "python"), "-c", "import pytest"], capture_output=True, text=True)
    assert "No module named 'pytest'" in absent.stderr


def test_serve_submit_status_and_download_need_only_the_runtime_dependencies(
    runtime_venv: Path, tmp_path: Path, ravdess_root: Path
):
    sernas = str(runtime_venv / "sernas")
    db_url = f"sqlite:///{tmp_path / 'sernas.db'}"
    data_dir = tmp_path / "sernas"
    env = _env(data_dir=str(data_dir), database_url=db_url, data_roots=f'["{ravdess_root.parent}"]')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sernas, "serve", "--no-dispatcher", "--port", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        _wait_for(url, server, log)

        def run(*args: str) -> str:
            done = subprocess.run([sernas, *args, "--url", url], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert "ModuleNotFoundError" not in done.stderr, done.stderr
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout

        submitted = run("submit", "--corpus", "ravdess", "--data", str(ravdess_root), "--classes", "calm,angry")
        search_id = submitted.split()[1]
        assert submitted.startswith(f"search {search_id} queued")
        assert f"{search_id}  queued" in run("status")
        assert f"search {search_id}: queued" in run("status", search_id)

        # No dispatcher here: the search is finished by hand, with a real model where its result would be.
        engine = make_engine(db_url)
        sessions = session_factory(engine)
        assert repo.mark_finished(sessions, search_id, SearchStatus.COMPLETED, summary={"ua_mean": 0.5})
        engine.dispose()
        write_model(data_dir / "searches" / search_id)
        bundle = tmp_path / "bundle.zip"
        assert f"bundle written to {bundle}" in run("download", search_id, "--to", str(bundle))
        assert {"genome.json", "weights.safetensors", "metrics.json"} <= set(zipfile.ZipFile(bundle).namelist())
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert "ModuleNotFoundError" not in log.read_text()


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, f"sernas serve exited with {server.returncode}:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"sernas serve did not answer:\n{log.read_text()[-4000:]}"
        time.sleep(0.3)
