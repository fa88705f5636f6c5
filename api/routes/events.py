"""The live feed of a search as Server-Sent Events.

`GET /searches/{id}/events` replays the search's events after `Last-Event-ID` (or `?after=`),
then polls the study database for new events and status changes, and ends once the search has
finished and every event is sent, or when the server is stopping (the client reconnects to the next one). Event
types:

- `status` (no id): `StatusPublic`, first and then whenever status, cancel flag or attempts change;
- `log`, `trial` and `epoch` (id = the event id, so a reconnecting EventSource resumes where it
  stopped): `EventPublic`, in the order they happened. `trial`: a trial started, was resumed or
  finished (trial id, key, fold, stage, state; final metrics); `epoch`: a trial computed an epoch
  (trial id, key, fold, stage, epoch number and the epoch's metrics). A resumed search replays its
  restored epochs to its reporter, but they were computed before, so they send no event again;
- `end` (no id): the final `StatusPublic`, just before the stream closes.

Idle streams get a keep-alive comment every 15 s (FastAPI's SSE support). Polling rather than
notifications keeps it backend-neutral and works whichever process (a Ray worker on another
node) wrote the events; a poll is one indexed query.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.deps import VALIDATION, SearchId, SessionsDep, errors, get_or_404
from api.errors import ApiError
from api.schemas import EventPublic, StatusPublic
from nas.store import repository as repo
from nas.store.models import FINISHED_SEARCH, Search

router = APIRouter(tags=["events"], responses=VALIDATION)

POLL_SECONDS = 1.0  # how often an open stream looks for new events
BATCH = 200  # events per query
RETRY_MS = 3000  # how long a browser waits before reconnecting
MAX_ID = 2**62


async def existing_search(search_id: SearchId, sessions: SessionsDep) -> Search:
    """Resolved before the stream starts, so an unknown id is a plain 404, not a broken stream."""
    return await run_in_threadpool(get_or_404, sessions, search_id)


# An event id as the header carries it: up to 18 digits (every such number is below MAX_ID), or empty.
EVENT_ID_PATTERN = r"^[0-9]{0,18}$"


def start_after(
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="replay events with an id above this")] = None,
    # The pattern is documented but checked here: a value that breaks it gets a 400 that says what an id is.
    last_event_id: Annotated[
        str | None,
        Header(description="sent by a reconnecting EventSource", json_schema_extra={"pattern": EVENT_ID_PATTERN}),
    ] = None,
) -> int:
    """The id to replay after: `?after=` wins over `Last-Event-ID`. A dependency, so that a bad value
    is a 400 before the stream starts."""
    if last_event_id is not None and not re.fullmatch(EVENT_ID_PATTERN, last_event_id):
        message = f"Last-Event-ID must be an event id (up to 18 digits), got {last_event_id[:50]!r}"
        raise ApiError(400, "bad_request", message, [(["header", "last-event-id"], message)])
    if after is not None:
        return after
    return int(last_event_id) if last_event_id else 0


def _status(search: Search) -> StatusPublic:
    return StatusPublic(
        search_id=search.id,
        status=search.status,
        cancel_requested=search.cancel_requested,
        attempts=search.attempts,
        error=search.error,
        summary=search.summary,
    )


@router.get(
    "/searches/{search_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"description": "an event stream: `status`, `log`, `trial` and `epoch` (EventPublic) and `end` events"},
        **errors(400, 404),
    },
)
async def search_events(
    search: Annotated[Search, Depends(existing_search)],
    sessions: SessionsDep,
    cursor: Annotated[int, Depends(start_after)],
    request: Request,
) -> AsyncIterator[ServerSentEvent]:
    """Live events of a search (Server-Sent Events); the stream ends when the search has finished."""
    last_status = _status(search)
    yield ServerSentEvent(data=last_status, event="status", retry=RETRY_MS)
    while True:
        # Read the status before the events: events a finishing worker wrote with its final status
        # are then already visible to the events query that follows.
        current = await run_in_threadpool(repo.get_search, sessions, search.id)
        if current is None:  # deleted under us
            return
        while True:
            events = await run_in_threadpool(repo.events_after, sessions, search.id, cursor, BATCH)
            for event in events:
                cursor = event.id
                yield ServerSentEvent(data=EventPublic.of(event), event=event.kind.value, id=str(event.id))
            if len(events) < BATCH:
                break
        status = _status(current)
        if status != last_status:
            last_status = status
            yield ServerSentEvent(data=status, event="status")
        if current.status in FINISHED_SEARCH:
            yield ServerSentEvent(data=status, event="end")
            return
        if request.app.state.stopping.is_set():  # no `end`: the search goes on, and so does its feed elsewhere
            return
        await anyio.sleep(POLL_SECONDS)
