"""GET /health reports the database, the dispatcher and Ray, and is "ok" only when all three are."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

import api.routes.catalog as catalog
from api.main import create_app
from api.service import create_service
from nas.settings import Settings
from tests.workers import ThreadBackend
from workers.ray_backend import RayBackend


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path) -> Settings:
    # Health does not depend on the database's kind: SQLite alone is enough.
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'sernas.db'}")


@pytest.fixture(name="client")
def client_fixture(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _ray_dispatcher(settings: Settings, address: str | None = None) -> SimpleNamespace:
    """What /health reads of a `workers.Dispatcher` on Ray, connected, without starting Ray."""
    connected = threading.Event()
    connected.set()
    return SimpleNamespace(
        error=None, connected=connected, tasks={"a": object()}, settings=settings, backend=RayBackend(address)
    )


def _health(client: TestClient, status: int = 200) -> dict[str, Any]:
    response = client.get("/health")
    assert response.status_code == status, response.text
    return response.json()


def test_without_a_dispatcher_both_are_disabled_and_health_is_ok(client):
    health = _health(client)
    assert health["status"] == "ok" and health["database"] is True
    assert health["dispatcher"]["status"] == "disabled" and "SERNAS_DISPATCHER" in health["dispatcher"]["detail"]
    assert health["ray"]["status"] == "disabled"


def test_a_running_dispatcher_on_a_stand_in_backend(settings):
    with TestClient(create_service(settings, backend=ThreadBackend())) as client:
        deadline = time.monotonic() + 10
        while _health(client)["dispatcher"]["status"] == "starting":  # it connects from its own thread
            assert time.monotonic() < deadline
            time.sleep(0.05)
        health = _health(client)
    assert health["status"] == "ok"
    assert health["dispatcher"] == {"status": "ok", "detail": f"0 of at most {settings.max_running} searches running"}
    assert health["ray"] == {"status": "disabled", "detail": "the dispatcher runs searches on ThreadBackend"}


def test_a_dispatcher_that_cannot_reach_ray_makes_health_degraded(settings):
    class Unreachable(ThreadBackend):
        def connect(self) -> None:
            raise ConnectionError("no GCS at 10.0.0.9:6379")

    with TestClient(create_service(settings, backend=Unreachable())) as client:
        deadline = time.monotonic() + 10
        while (health := _health(client))["dispatcher"]["status"] == "starting":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert health["status"] == "degraded"
    for component in ("dispatcher", "ray"):
        assert health[component]["status"] == "error"
        assert "cannot connect to Ray: no GCS at 10.0.0.9:6379" in health[component]["detail"]


def test_a_dispatcher_still_connecting(client, settings):
    dispatcher = _ray_dispatcher(settings)
    dispatcher.connected.clear()
    client.app.state.dispatcher = dispatcher
    health = _health(client)
    assert health["status"] == "degraded"
    assert (health["dispatcher"]["status"], health["ray"]["status"]) == ("starting", "starting")


def test_a_failing_poll_is_reported(client, settings, monkeypatch):
    monkeypatch.setattr(catalog, "cluster_resources", lambda: "CPU 2, GPU 0")
    client.app.state.dispatcher = dispatcher = _ray_dispatcher(settings)
    dispatcher.error = "dispatcher poll failed: connection refused"
    health = _health(client)
    assert health["status"] == "degraded"
    assert health["dispatcher"] == {"status": "error", "detail": "dispatcher poll failed: connection refused"}
    assert health["ray"]["status"] == "ok"


def test_ray_reports_what_the_cluster_has(client, settings, monkeypatch):
    monkeypatch.setattr(catalog, "cluster_resources", lambda: "CPU 16, GPU 2")
    client.app.state.dispatcher = _ray_dispatcher(settings, "10.0.0.9:6379")
    health = _health(client)
    assert health["status"] == "ok"
    assert health["dispatcher"] == {"status": "ok", "detail": f"1 of at most {settings.max_running} searches running"}
    assert health["ray"] == {"status": "ok", "detail": "the Ray cluster at 10.0.0.9:6379: CPU 16, GPU 2"}


def test_a_ray_that_fails_makes_health_degraded(client, settings, monkeypatch):
    def gone() -> str:
        raise ConnectionError("GCS has gone away")

    monkeypatch.setattr(catalog, "cluster_resources", gone)
    client.app.state.dispatcher = _ray_dispatcher(settings)
    health = _health(client)
    assert health["status"] == "degraded" and health["dispatcher"]["status"] == "ok"
    assert health["ray"] == {
        "status": "error",
        "detail": "the local Ray did not answer: ConnectionError: GCS has gone away",
    }


def test_a_hung_ray_is_reported_and_asked_once_at_a_time(client, settings, monkeypatch):
    release = threading.Event()
    calls: list[int] = []

    def hung() -> str:
        calls.append(1)
        release.wait(10)
        return "CPU 2, GPU 0"

    monkeypatch.setattr(catalog, "cluster_resources", hung)
    monkeypatch.setattr(catalog, "RAY_PROBE_SECONDS", 0.2)
    client.app.state.dispatcher = _ray_dispatcher(settings)
    for _ in range(3):
        health = _health(client)
        assert health["status"] == "degraded"
        assert health["ray"] == {"status": "error", "detail": "the local Ray did not answer within 0.2 s"}
    assert len(calls) == 1  # the later checks waited for the same call instead of starting more
    release.set()
    assert _health(client)["ray"] == {"status": "ok", "detail": "the local Ray: CPU 2, GPU 0"}


def test_a_dead_database_is_503_whatever_the_rest(client, tmp_path):
    unreachable = create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}")
    client.app.state.sessions = sessionmaker(unreachable)
    health = _health(client, 503)
    assert (health["status"], health["database"]) == ("degraded", False)


def test_health_asks_a_real_local_ray(settings):
    with TestClient(create_service(settings)) as client:
        dispatcher = client.app.state.dispatcher
        assert dispatcher.connected.wait(120), dispatcher.error
        health = _health(client)
    assert health["status"] == "ok", health
    assert health["ray"]["status"] == "ok" and health["ray"]["detail"].startswith("the local Ray: CPU ")
