"""The service on loopback, for the tests and benchmarks that talk to it for real: a free port, an app served by
uvicorn in a thread, and headless Chromium driven by chromedriver (Debian's `chromium` and `chromium-driver`, which
.ci/run installs).

Chromium runs with every host name but the loopback address resolving to nothing: a page that needed the
internet (a CDN, a web font) would fail here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """`app` (api.main.create_app's) served by uvicorn on a free loopback port until the block ends; yields its
    base URL. At the end, the app's open event streams are told to end, as `sernas serve` tells them."""
    port = free_port()
    # The streams end within a poll; the timeout only bounds a stop that something else holds up.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.stopping.set()
        server.should_exit = True
        thread.join(timeout=15)


def headless_chromium(profile: Path) -> Any:
    """A chromedriver session of headless Chromium with its profile in `profile`, keeping the page's console log;
    the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
