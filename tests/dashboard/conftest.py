"""The service on a loopback port (uvicorn in a thread, a fresh SQLite study database) and headless Chromium driven
by chromedriver (Debian's `chromium` and `chromium-driver`, which .ci/run installs): the browser tests need both,
and fail rather than skip without them, so CI cannot pass without having run them.

Chromium runs with every host name but the loopback address resolving to nothing: a page that needed the
internet (a CDN, a web font) would fail here.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from nas.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 15


@dataclass
class LiveServer:
    url: str
    settings: Settings
    sessions: sessionmaker[Session]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(settings: Settings) -> Iterator[LiveServer]:
    """The app of `settings` served by uvicorn on a free loopback port until the generator is closed."""
    app = create_app(settings)
    port = _free_port()
    # Open event streams (a page left on a running search) must not hold up the shutdown.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings, app.state.sessions)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def live(tmp_path: Path, ravdess_root: Path) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path / "sernas",
        database_url=f"sqlite:///{tmp_path / 'sernas.db'}",
        data_roots=[ravdess_root.parent],
    )
    yield from serve(settings)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sernas-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
        # No network but the loopback: anything fetched from elsewhere fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Any]:
    """The browser, its console emptied, left on a blank page afterwards (no stream open on a stopped server)."""
    browser.get_log("browser")
    yield browser
    browser.get("about:blank")
