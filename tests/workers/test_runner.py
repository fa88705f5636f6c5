"""The runner on its own (no Ray): outcome recording, cancel, lost leases, failures; SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import pytest

from nas.settings import Settings
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.workers import fake_search, tiny_spec
from workers.runner import Heartbeat, RunnerConfig, execute

OWNER = "test-host:1:abc#1"


def _config(db_url: str, tmp_path: Path, lease: float = 30.0) -> RunnerConfig:
    return RunnerConfig(
        db_url=db_url,
        owner=OWNER,
        results_dir=tmp_path / "searches",
        cache_dir=tmp_path / "features",
        lease_seconds=lease,
        check_seconds=0.1,
    )


def _claimed(sessions, corpus: str = "ravdess", lease: float = 30.0) -> str:
    spec = tiny_spec(corpus).model_dump(mode="json")
    search_id = repo.create_search(sessions, spec, "test", "darts").id
    assert repo.claim_next_search(sessions, OWNER, lease).id == search_id
    return search_id


def _events(sessions, search_id: str) -> list[str]:
    return [e.message for e in repo.events_after(sessions, search_id, limit=1000)]


def test_a_search_runs_to_completion_with_its_trials_summary_and_artifacts(db_url, sessions, tmp_path):
    search_id = _claimed(sessions)
    assert execute(search_id, _config(db_url, tmp_path), fake_search) == "completed"

    search = repo.get_search(sessions, search_id)
    assert search.status == SearchStatus.COMPLETED and search.lease_owner is None
    assert search.summary == {"ua_mean": pytest.approx(0.55), "folds": 2}
    assert search.result_dir == str(tmp_path / "searches" / search_id)
    page = repo.list_trials(sessions, search_id)
    assert sorted(t.key for t in page.items) == [
        "fold-0/retrain",
        "fold-0/search",
        "fold-1/retrain",
        "fold-1/search",
    ]
    assert all(t.state == "complete" for t in page.items)
    steps = repo.get_trial(sessions, page.items[0].id).steps
    assert [s.step for s in steps] == [1, 2, 3]
    events = _events(sessions, search_id)
    assert any(m.startswith("worker started: host ") and " pid " in m for m in events)
    assert events[-1] == "completed"
    assert any(e.name == "metrics.json" for e in _search_artifacts(sessions, search_id))


def _search_artifacts(sessions, search_id):
    from sqlalchemy import select

    from nas.store.models import Artifact

    with sessions() as session:
        return list(session.scalars(select(Artifact).where(Artifact.search_id == search_id)))


def test_a_failure_is_recorded_with_its_message_and_traceback(db_url, sessions, tmp_path):
    search_id = _claimed(sessions, corpus="boom")
    assert execute(search_id, _config(db_url, tmp_path), fake_search) == "failed"
    search = repo.get_search(sessions, search_id)
    assert search.status == SearchStatus.FAILED
    assert search.error == "ValueError: the fake corpus exploded on purpose"
    log = "\n".join(_events(sessions, search_id))
    assert "Traceback" in log and "fake_search" in log


def test_a_config_error_keeps_its_own_message(db_url, sessions, tmp_path):
    # Specs refuse device 'cuda' without a GPU when validated; this one was stored without validation.
    search_id = repo.create_search(
        sessions, tiny_spec().model_copy(update={"device": "cuda"}).model_dump(mode="json"), "gpu", "darts"
    ).id
    repo.claim_next_search(sessions, OWNER, 30)
    assert execute(search_id, _config(db_url, tmp_path), fake_search) == "failed"
    error = repo.get_search(sessions, search_id).error
    assert error.startswith("the stored spec is invalid: gpus: device 'cuda' reserves no GPU"), error
    assert "input_value" not in error  # the reason, not pydantic's dump of the whole spec
    assert repo.list_trials(sessions, search_id).total == 0  # refused before the search started


def test_a_search_too_big_for_memory_fails_fast_when_the_worker_starts_it(db_url, sessions, tmp_path, ravdess_root):
    """A search that reached the queue without the controller's check (straight into the database, or queued
    before the cluster was known): the real runner's preflight refuses it, before any audio."""
    from nas.spec import CorpusSpec, spec_from_preset

    spec = spec_from_preset(
        "emodarts-demo",
        CorpusSpec(name="ravdess", root=ravdess_root, classes=("neutral", "happy", "sad")),
        {"options.memory_limit_gb": 0.01},
        device="cpu",
    )
    search_id = repo.create_search(sessions, spec.model_dump(mode="json"), "too big", "darts").id
    repo.claim_next_search(sessions, OWNER, 30)
    started = time.monotonic()
    assert execute(search_id, _config(db_url, tmp_path)) == "failed"  # the real nas.runner.run_search
    assert time.monotonic() - started < 60
    error = repo.get_search(sessions, search_id).error
    assert "needs about" in error and "GB" in error and "try " in error, error  # the ResourceError's own message
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").rglob("*.npy"))
    assert repo.list_trials(sessions, search_id).total == 0


def test_cancel_stops_the_search_within_a_second_and_resume_finishes_it(db_url, sessions, tmp_path):
    search_id = _claimed(sessions)
    slow = functools.partial(fake_search, step_seconds=0.2)
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(execute(search_id, _config(db_url, tmp_path), slow)))
    worker.start()
    _wait(lambda: repo.list_trials(sessions, search_id).total > 0)
    repo.request_cancel(sessions, search_id)
    asked = time.monotonic()
    worker.join(timeout=10)
    assert outcome == ["cancelled"] and time.monotonic() - asked < 3
    assert repo.get_search(sessions, search_id).status == SearchStatus.CANCELLED

    repo.resume(sessions, search_id)
    repo.claim_next_search(sessions, OWNER, 30)
    assert execute(search_id, _config(db_url, tmp_path), fake_search) == "completed"
    starts = [m for m in _events(sessions, search_id) if m.startswith("fake: fold-0/search")]
    assert len(starts) == 2 and not starts[1].startswith("fake: fold-0/search from epoch 1 ")


def test_a_runner_that_lost_its_lease_stops_and_records_nothing(db_url, sessions, tmp_path):
    search_id = _claimed(sessions, lease=0.6)
    slow = functools.partial(fake_search, step_seconds=0.3)
    outcome: list[str] = []
    config = _config(db_url, tmp_path, lease=0.6)
    # The runner renews every 0.2 s; here someone re-queues and re-claims it under another name.
    worker = threading.Thread(target=lambda: outcome.append(execute(search_id, config, slow)))
    worker.start()
    _wait(lambda: repo.list_trials(sessions, search_id).total > 0)
    with sessions() as session, session.begin():
        from nas.store.models import Search

        session.get(Search, search_id).lease_owner = "somebody-else"
    worker.join(timeout=10)
    assert outcome == ["lost"]
    search = repo.get_search(sessions, search_id)
    assert search.status == SearchStatus.RUNNING and search.lease_owner == "somebody-else"


def test_a_search_no_longer_held_is_not_run(db_url, sessions, tmp_path):
    search_id = repo.create_search(sessions, tiny_spec().model_dump(mode="json"), "queued", "darts").id
    assert execute(search_id, _config(db_url, tmp_path), fake_search) == "lost"
    assert repo.list_trials(sessions, search_id).total == 0


def test_heartbeat_gives_up_when_the_database_stays_unreachable(sessions):
    search_id = _claimed(sessions)

    class Broken:
        def __call__(self):
            raise ConnectionError("database is away")

    beat = Heartbeat(Broken(), search_id, OWNER, lease_seconds=0.6, check_seconds=0.05).start()
    try:
        _wait(beat.should_stop, timeout=3)
        assert beat.reason == "lost"
    finally:
        beat.stop()


def test_settings_paths_feed_the_runner_config(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.results_dir == tmp_path / "searches" and settings.cache_dir == tmp_path / "features"


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
