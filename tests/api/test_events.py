"""GET /searches/{id}/events: Server-Sent Events replayed from the database, then followed live."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from api.routes import events as events_route
from nas.reporting import TrialState
from nas.store import repository as repo
from nas.store.models import SearchStatus
from nas.store.reporter import DbReporter
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    assert_error,
    client_fixture,
    sessions_of,
    settings_fixture,
)
from tests.api.test_reads import queue_search


def read_stream(client, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The events of a stream that ends: [{"event", "id", "data", "retry"}]."""
    with client.stream("GET", url, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    parsed = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue  # keep-alive comment
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        if fields:
            parsed.append(fields)
    return parsed


def stream_while(client, search: str, worker: Callable[[], None]) -> list[dict[str, Any]]:
    """The whole event stream of `search`, read while `worker` reports to it from another thread."""
    thread = threading.Thread(target=worker)
    thread.start()
    try:
        return read_stream(client, f"/searches/{search}/events")
    finally:
        thread.join()


def test_replay_of_a_finished_search(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)
    for i in range(5):
        repo.add_event(sessions, search, f"message {i}", logging.WARNING if i == 3 else logging.INFO)
    repo.mark_finished(sessions, search, SearchStatus.FAILED, error="out of memory")

    stream = read_stream(client, f"/searches/{search}/events")
    assert stream[0]["event"] == "status" and stream[0]["retry"] == "3000"
    assert stream[0]["data"]["status"] == "failed"
    logs = [e for e in stream if e["event"] == "log"]
    assert [e["data"]["message"] for e in logs] == [
        *(f"message {i}" for i in range(5)),
        "failed: out of memory",
    ]
    assert [int(e["id"]) for e in logs] == [e["data"]["id"] for e in logs]
    assert logs[3]["data"]["level_name"] == "WARNING" and logs[-1]["data"]["level"] == logging.ERROR
    assert stream[-1]["event"] == "end" and stream[-1]["data"]["error"] == "out of memory"

    third = logs[2]["data"]["id"]
    after = read_stream(client, f"/searches/{search}/events", params={"after": third})
    assert [e["data"]["id"] for e in after if e["event"] == "log"] == [e["data"]["id"] for e in logs[3:]]
    resumed = read_stream(client, f"/searches/{search}/events", headers={"Last-Event-ID": str(third)})
    assert [e["data"]["id"] for e in resumed if e["event"] == "log"] == [e["data"]["id"] for e in logs[3:]]


def test_live_events_and_status_changes(client, monkeypatch):
    monkeypatch.setattr(events_route, "POLL_SECONDS", 0.05)
    sessions = sessions_of(client)
    search = queue_search(sessions)
    repo.add_event(sessions, search, "before")

    def worker() -> None:
        time.sleep(0.3)
        claimed = repo.claim_next_search(sessions, "worker-1", 30)
        assert claimed is not None and claimed.id == search
        repo.add_event(sessions, search, "fold 0 started")
        time.sleep(0.3)
        repo.mark_finished(sessions, search, SearchStatus.COMPLETED, summary={"ua_mean": 0.6})

    stream = stream_while(client, search, worker)
    statuses = [e["data"]["status"] for e in stream if e["event"] == "status"]
    assert statuses == ["queued", "running", "completed"]
    messages = [e["data"]["message"] for e in stream if e["event"] == "log"]
    assert messages == ["before", "claimed by worker-1 (attempt 1)", "fold 0 started", "completed"]
    assert stream[-1] == {"event": "end", "data": {**stream[-1]["data"], "summary": {"ua_mean": 0.6}}}


def test_bad_requests(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)
    assert_error(client.get("/searches/nope/events"), 404, "not_found")
    bad_id = client.get(f"/searches/{search}/events", headers={"Last-Event-ID": "seven"})
    assert "Last-Event-ID" in assert_error(bad_id, 400)["message"]
    assert_error(client.get(f"/searches/{search}/events", params={"after": -1}), 422)


EPOCHS = {1: {"loss": 1.0, "val_ua": 0.5}, 2: {"loss": 0.5, "val_ua": 0.625}}


def test_trials_and_epochs_stream_live_as_their_own_event_types_in_order(client, monkeypatch):
    monkeypatch.setattr(events_route, "POLL_SECONDS", 0.05)
    sessions = sessions_of(client)
    search = queue_search(sessions)
    repo.claim_next_search(sessions, "worker-1", 30)
    trials: list[int] = []

    def worker() -> None:  # reports as a search worker does, while the stream is open
        with DbReporter(sessions, search, flush_seconds=0.05) as reporter:
            time.sleep(0.3)
            trials.append(reporter.start_trial("fold-0/search", {}, fold=0, stage="search"))
            for epoch, metrics in EPOCHS.items():
                time.sleep(0.1)
                reporter.report(trials[0], epoch, metrics)
            reporter.log("derived a genome")
            reporter.finish_trial(trials[0], TrialState.COMPLETE, {"ua": 0.55, "alphas": [[0.5, 0.5]]})
        repo.mark_finished(sessions, search, SearchStatus.COMPLETED)

    stream = stream_while(client, search, worker)
    (trial,) = trials
    events = [e for e in stream if e["event"] in ("trial", "epoch", "log")]
    assert [(e["event"], e["data"]["trial_id"]) for e in events[1:]] == [
        ("trial", trial),
        ("epoch", trial),
        ("epoch", trial),
        ("log", None),
        ("trial", trial),
        ("log", None),  # completed
    ]
    assert [int(e["id"]) for e in events] == sorted(e["data"]["id"] for e in events)
    started, first, second, _, finished, _ = events[1:]
    where = {"key": "fold-0/search", "fold": 0, "stage": "search"}
    assert started["data"] | where == started["data"] and started["data"]["state"] == "running"
    assert first["data"] | where == first["data"] and second["data"] | where == second["data"]
    assert [(e["data"]["epoch"], e["data"]["metrics"]) for e in (first, second)] == list(EPOCHS.items())
    assert first["data"]["message"] == "fold-0/search epoch 1: loss 1, val_ua 0.5"
    assert (finished["data"]["state"], finished["data"]["metrics"]) == ("complete", {"ua": 0.55})  # numbers only
    assert events[0]["data"]["kind"] == "log" and events[0]["data"]["epoch"] is None

    # A reconnecting EventSource resumes after the last id it saw, whatever that event's type.
    again = read_stream(client, f"/searches/{search}/events", headers={"Last-Event-ID": first["id"]})
    assert [e["event"] for e in again if "id" in e] == ["epoch", "log", "trial", "log"]
