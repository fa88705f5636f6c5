"""The service under test: `sernas serve` in a subprocess on a fresh database of each backend."""

from __future__ import annotations

import pytest

from tests.e2e import Server


@pytest.fixture
def server(tmp_path, db_url, ravdess_root):
    running = Server(tmp_path, db_url, [ravdess_root])
    yield running
    running.stop()
