from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from nas.spec import CorpusSpec, DartsSearch, parse_spec
from nas.store import repository as repo
from nas.store.models import SearchStatus

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def spec_json(seed: int = 0) -> dict:
    corpus = CorpusSpec(name="ravdess", root=Path("/data/ravdess"))
    return DartsSearch(corpus=corpus, seed=seed).model_dump(mode="json")


def queue(sessions: sessionmaker[Session], n: int) -> list[str]:
    return [repo.create_search(sessions, spec_json(i), f"search {i}", "darts").id for i in range(n)]


def test_lifecycle_queued_running_completed(sessions):
    created = repo.create_search(sessions, spec_json(), "first", "darts")
    assert created.status == SearchStatus.QUEUED and created.attempts == 0
    stored = repo.get_search(sessions, created.id)
    assert parse_spec(stored.spec) == parse_spec(spec_json())
    assert stored.created_at.tzinfo is not None and stored.created_at.utcoffset() == timedelta(0)

    claimed = repo.claim_next_search(sessions, "worker-a", lease_seconds=30, now=T0)
    assert claimed.id == created.id and claimed.status == SearchStatus.RUNNING
    assert (claimed.lease_owner, claimed.attempts) == ("worker-a", 1)
    assert claimed.lease_expires_at == T0 + timedelta(seconds=30)
    assert claimed.updated_at > created.updated_at
    assert repo.claim_next_search(sessions, "worker-b", lease_seconds=30) is None  # nothing else queued

    assert repo.renew_lease(sessions, created.id, "worker-a", 30, now=T0 + timedelta(seconds=20))
    assert repo.get_search(sessions, created.id).lease_expires_at == T0 + timedelta(seconds=50)
    assert not repo.renew_lease(sessions, created.id, "worker-b", 30)  # not its lease

    repo.set_result_dir(sessions, created.id, Path("/runs") / created.id)
    assert repo.mark_finished(sessions, created.id, SearchStatus.COMPLETED, summary={"ua": 0.61}, owner="worker-a")
    done = repo.get_search(sessions, created.id)
    assert done.status == SearchStatus.COMPLETED and done.summary == {"ua": 0.61}
    assert done.lease_owner is None and done.finished_at is not None
    assert done.result_dir == f"/runs/{created.id}"
    assert not repo.renew_lease(sessions, created.id, "worker-a", 30)
    with pytest.raises(repo.InvalidTransitionError, match="completed"):
        repo.resume(sessions, created.id)
    messages = [e.message for e in repo.events_after(sessions, created.id)]
    assert messages == ["claimed by worker-a (attempt 1)", "completed"]


def test_failure_records_the_error_and_resume_requeues(sessions):
    search_id = queue(sessions, 1)[0]
    repo.claim_next_search(sessions, "w", 30)
    assert repo.mark_finished(sessions, search_id, SearchStatus.FAILED, error="out of memory", owner="w")
    failed = repo.get_search(sessions, search_id)
    assert (failed.status, failed.error) == (SearchStatus.FAILED, "out of memory")
    resumed = repo.resume(sessions, search_id)
    assert resumed.status == SearchStatus.QUEUED and resumed.error is None and resumed.finished_at is None
    assert repo.resume(sessions, search_id).status == SearchStatus.QUEUED  # resuming twice is harmless
    assert repo.claim_next_search(sessions, "w2", 30).attempts == 2
    with pytest.raises(ValueError, match="finishes as one of"):
        repo.mark_finished(sessions, search_id, SearchStatus.RUNNING)


def test_claims_oldest_first_and_lists_newest_first(sessions):
    ids = queue(sessions, 5)
    claimed = [repo.claim_next_search(sessions, "w", 30).id for _ in range(2)]
    assert claimed == ids[:2]
    everything = repo.list_searches(sessions)
    assert [s.id for s in everything.items] == ids[::-1] and everything.total == 5
    queued = repo.list_searches(sessions, status=SearchStatus.QUEUED, limit=2, offset=1)
    assert [s.id for s in queued.items] == [ids[3], ids[2]] and queued.total == 3


def test_idempotency_key_returns_the_first_search(sessions):
    first = repo.create_search(sessions, spec_json(), "a", "darts", idempotency_key="client-42")
    again = repo.create_search(sessions, spec_json(), "a", "darts", idempotency_key="client-42")
    assert again.id == first.id
    assert repo.list_searches(sessions).total == 1
    with pytest.raises(repo.IdempotencyConflictError, match="client-42"):
        repo.create_search(sessions, spec_json(seed=1), "a", "darts", idempotency_key="client-42")
    other = repo.create_search(sessions, spec_json(), "a", "darts", idempotency_key="client-43")
    assert other.id != first.id


def test_cancel_queued_is_immediate_and_cancel_running_stops_the_lease(sessions):
    waiting, running = queue(sessions, 2)
    repo.claim_next_search(sessions, "w", 30)  # takes `waiting`, the older one
    waiting, running = running, waiting
    assert repo.request_cancel(sessions, waiting).status == SearchStatus.CANCELLED
    assert repo.claim_next_search(sessions, "w2", 30) is None  # a cancelled search is never claimed

    flagged = repo.request_cancel(sessions, running)
    assert flagged.status == SearchStatus.RUNNING and flagged.cancel_requested
    assert not repo.renew_lease(sessions, running, "w", 30)  # the runner learns it must stop
    assert repo.mark_finished(sessions, running, SearchStatus.CANCELLED, owner="w")
    assert repo.request_cancel(sessions, running).status == SearchStatus.CANCELLED  # no-op when finished

    resumed = repo.resume(sessions, running)
    assert resumed.status == SearchStatus.QUEUED and not resumed.cancel_requested
    with pytest.raises(repo.NotFoundError):
        repo.request_cancel(sessions, "no-such-search")


def test_expired_lease_requeues_and_the_old_worker_is_fenced_off(sessions):
    search_id = queue(sessions, 1)[0]
    repo.claim_next_search(sessions, "dead-worker", lease_seconds=10, now=T0)
    assert repo.requeue_expired(sessions, now=T0 + timedelta(seconds=5)) == []
    assert repo.requeue_expired(sessions, now=T0 + timedelta(seconds=11)) == [search_id]
    requeued = repo.get_search(sessions, search_id)
    assert requeued.status == SearchStatus.QUEUED and requeued.lease_owner is None

    again = repo.claim_next_search(sessions, "new-worker", 10, now=T0 + timedelta(seconds=12))
    assert (again.id, again.attempts) == (search_id, 2)
    # The first worker was only slow, not dead: it must notice and must not overwrite the result.
    assert not repo.renew_lease(sessions, search_id, "dead-worker", 10)
    assert not repo.mark_finished(sessions, search_id, SearchStatus.FAILED, error="late", owner="dead-worker")
    assert repo.get_search(sessions, search_id).status == SearchStatus.RUNNING


def test_expired_lease_of_a_cancelled_or_hopeless_search_does_not_requeue(sessions):
    cancelled, crashing = queue(sessions, 2)
    for _ in range(2):
        repo.claim_next_search(sessions, "w", 10, now=T0)
    repo.request_cancel(sessions, cancelled)
    assert repo.requeue_expired(sessions, now=T0 + timedelta(minutes=1), max_attempts=1) == []
    assert repo.get_search(sessions, cancelled).status == SearchStatus.CANCELLED
    gave_up = repo.get_search(sessions, crashing)
    assert gave_up.status == SearchStatus.FAILED and "after 1 attempts" in gave_up.error


def test_naive_datetimes_are_refused(sessions):
    queue(sessions, 1)
    with pytest.raises(StatementError, match="naive datetime"):
        repo.claim_next_search(sessions, "w", 10, now=datetime(2026, 5, 1, 12, 0))
