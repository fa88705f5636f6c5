"""The service on a loopback port (uvicorn in a thread, a fresh SQLite study database) and headless Chromium
(tests.live): the browser tests need both, and fail rather than skip without them, so CI cannot pass without
having run them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from nas.settings import Settings
from tests.live import CHROMEDRIVER, CHROMIUM, headless_chromium, served

WAIT_SECONDS = 15


@dataclass
class LiveServer:
    url: str
    settings: Settings
    sessions: sessionmaker[Session]


def serve(settings: Settings) -> Iterator[LiveServer]:
    """The app of `settings` served on a free loopback port until the generator is closed."""
    app = create_app(settings)
    with served(app) as url:
        yield LiveServer(url, settings, app.state.sessions)


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
    profile = tempfile.mkdtemp(prefix="sernas-chromium-")
    driver = headless_chromium(Path(profile))
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
