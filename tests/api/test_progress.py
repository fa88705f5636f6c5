"""Progress and time left on GET /searches/{id} and on the list, which stays a fixed number of queries a page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event

from nas.store import repository as repo
from nas.store.models import utcnow
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    client_fixture,
    sessions_of,
    settings_fixture,
)
from tests.api.test_reads import queue_search
from tests.store.test_progress_events import trial_that_ran

MINUTE = timedelta(minutes=1)


def _running_search(client, minutes_ago: int = 20) -> tuple[str, int]:
    """A search of 6 folds that started `minutes_ago`: fold 0 done in 10 minutes (its retrain 4), fold 1
    searching for 8 minutes with 2 epochs reported. Returns its id and the running trial's."""
    sessions = sessions_of(client)
    search_id = queue_search(sessions)
    now = utcnow()
    start = now - minutes_ago * MINUTE
    repo.claim_next_search(sessions, "worker-1", 3600, now=start)
    trial_that_ran(sessions, search_id, "fold-0/search", 0, "search", start, start + 6 * MINUTE)
    trial_that_ran(
        sessions, search_id, "fold-0/retrain/emodarts", 0, "retrain", start + 6 * MINUTE, start + 10 * MINUTE
    )
    running = trial_that_ran(sessions, search_id, "fold-1/search", 1, "search", now - 8 * MINUTE, None)
    repo.add_reports(
        sessions, [repo.StepRow(running, e, {"val_ua": 0.3 + e / 10}, now - (8 - e) * MINUTE) for e in (1, 2)]
    )
    return search_id, running


def test_a_running_search_shows_its_trials_fold_epoch_elapsed_time_and_time_left(client):
    search_id, running = _running_search(client)
    progress = client.get(f"/searches/{search_id}").json()["progress"]

    assert progress["trials"] == {"running": 1, "complete": 2, "pruned": 0, "failed": 0}
    assert (progress["folds_total"], progress["folds_done"]) == (6, 1)  # the preset's 6 speaker folds
    (current,) = progress["running"]
    assert {k: current[k] for k in ("id", "key", "fold", "stage", "epoch")} == {
        "id": running,
        "key": "fold-1/search",
        "fold": 1,
        "stage": "search",
        "epoch": 2,
    }
    assert progress["elapsed_seconds"] == pytest.approx(20 * 60, abs=30)
    # 5 folds left at 10 minutes, 8 of them spent on fold 1; then the final model at a retrain's 4 minutes.
    estimate = progress["estimate"]
    assert estimate["seconds"] == pytest.approx((5 * 10 - 8 + 4) * 60, abs=30)
    assert "5 of 6 fold(s) left" in estimate["basis"]


def test_a_queued_search_has_progress_without_running_trials_or_estimate(client):
    search_id = queue_search(sessions_of(client))
    progress = client.get(f"/searches/{search_id}").json()["progress"]
    assert progress == {
        "trials": {"running": 0, "complete": 0, "pruned": 0, "failed": 0},
        "folds_total": 6,
        "folds_done": 0,
        "running": [],
        "elapsed_seconds": None,
        "estimate": None,
    }


def _statements(client, path: str) -> tuple[dict, int]:
    """The JSON answer of GET `path` and how many SQL statements it took."""
    engine = sessions_of(client).kw["bind"]
    count = 0

    def counted(*_args: object) -> None:
        nonlocal count
        count += 1

    event.listen(engine, "before_cursor_execute", counted)
    try:
        answer = client.get(path).json()
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    return answer, count


def test_the_list_shows_each_searchs_progress_in_a_fixed_number_of_queries(client):
    ran = [_running_search(client)[0] for _ in range(2)]
    queued = [queue_search(sessions_of(client)) for _ in range(2)]

    small, few = _statements(client, "/searches?limit=3")  # newest first: both queued, one running
    page, many = _statements(client, "/searches?limit=10")
    assert len(small["items"]) == 3 and len(page["items"]) == 4
    assert many == few  # not one query per search
    progress = {s["id"]: s["progress"] for s in page["items"]}
    assert all(progress[s]["folds_done"] == 1 and progress[s]["estimate"] is not None for s in ran)
    assert all(progress[s]["trials"]["complete"] == 0 and progress[s]["running"] == [] for s in queued)
    assert [t["epoch"] for t in progress[ran[0]]["running"]] == [2]
