"""Trials: the paged, sorted, filtered listing of a search's trials; one trial with its steps; export."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from api.bundles import bundle_response
from api.deps import VALIDATION, SearchId, SessionsDep, SettingsDep, errors, get_or_404
from api.errors import ApiError
from api.schemas import NO_NUL, TrialDetail, TrialPage, TrialPublic
from nas.bundle import WEIGHTS_ARTIFACT
from nas.errors import ConfigError
from nas.reporting import TrialState
from nas.store import repository as repo

router = APIRouter(tags=["trials"], responses=VALIDATION)

TrialId = Annotated[int, PathParam(ge=1, le=2**62, description="a trial id")]


@router.get("/searches/{search_id}/trials", response_model=TrialPage, responses=errors(400, 404))
def list_trials(
    search_id: SearchId,
    sessions: SessionsDep,
    sort: Annotated[
        str, Query(max_length=32, description=f"one of {', '.join(repo.SORTS)}; '-' sorts descending")
    ] = "id",
    state: TrialState | None = None,
    stage: Annotated[str | None, Query(max_length=64, pattern=NO_NUL, description="e.g. search, retrain")] = None,
    fold: Annotated[int | None, Query(ge=0, le=10_000, description="only this fold's trials")] = None,
    min_ua: Annotated[float | None, Query(ge=0, le=1, description="only trials with UA >= this")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")] = None,
) -> TrialPage:
    """One page of the search's trials; trials without a value for the sort column come last."""
    if sort not in repo.SORTS:
        message = f"unknown sort {sort!r}; choose one of: {', '.join(repo.SORTS)}"
        raise ApiError(400, "unknown_name", message, [(["query", "sort"], message)], list(repo.SORTS))
    if cursor is not None:
        check_cursor(cursor, sort)
    get_or_404(sessions, search_id)
    try:
        page = repo.list_trials(
            sessions,
            search_id,
            state=state,
            stage=stage,
            fold=fold,
            min_ua=min_ua,
            sort=sort,
            limit=limit,
            cursor=cursor,
        )
    except ConfigError as exc:  # a cursor that is not ours, or from another sort
        raise ApiError(400, "bad_request", str(exc), [(["query", "cursor"], str(exc))]) from None
    links = {}
    if page.next_cursor is not None:
        query = {"sort": sort, "limit": limit, "cursor": page.next_cursor}
        filters = {"state": state, "stage": stage, "fold": fold, "min_ua": min_ua}
        query |= {k: v for k, v in filters.items() if v is not None}
        links["next"] = f"/searches/{search_id}/trials?{urlencode(query)}"
    return TrialPage(
        items=[TrialPublic.of(t) for t in page.items],
        total=page.total,
        sort=sort,
        limit=limit,
        next_cursor=page.next_cursor,
        links=links,
    )


MAX_ID = 2**62


def check_cursor(cursor: str, sort: str) -> None:
    """Refuse a cursor whose values the database would choke on (the repository checks its format).

    Every sort column is a number, and ids must fit the database's integers.
    """
    try:
        _sort, value, trial_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, binascii.Error):
        return  # not ours at all: list_trials says so
    numeric = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    if isinstance(value, int) and abs(value) > MAX_ID:
        numeric = False
    if not numeric or not isinstance(trial_id, int) or not 0 <= trial_id <= MAX_ID:
        message = "invalid cursor: pass the next_cursor of the previous page unchanged"
        raise ApiError(400, "bad_request", message, [(["query", "cursor"], message)])


@router.get("/trials/{trial_id}", response_model=TrialDetail, responses=errors(404))
def get_trial(trial_id: TrialId, sessions: SessionsDep) -> TrialDetail:
    """A trial with its genome, its per-step values and its files (names and checksums)."""
    trial = repo.get_trial(sessions, trial_id)
    if trial is None:
        raise ApiError(404, "not_found", f"no trial with id {trial_id}")
    return TrialDetail.of(trial)


@router.get(
    "/trials/{trial_id}/export",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "the bundle"},
        **errors(403, 404, 409),
    },
)
def export_trial(trial_id: TrialId, sessions: SessionsDep, settings: SettingsDep) -> FileResponse:
    """A completed trial's trained model as one zip (genome.json, weights, metrics.json, model card)."""
    trial = repo.get_trial(sessions, trial_id)
    if trial is None:
        raise ApiError(404, "not_found", f"no trial with id {trial_id}")
    weights = next((a for a in trial.artifacts if a.name == WEIGHTS_ARTIFACT), None)
    if trial.state != TrialState.COMPLETE or weights is None:
        raise ApiError(409, "no_result", f"trial {trial_id} ({trial.state.value}) has no trained weights to export")
    name = f"sernas-{trial.search_id[:8]}-trial-{trial.id}.zip"
    return bundle_response(Path(weights.path).parent, settings, name)
