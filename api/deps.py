"""Request dependencies: the settings, the study database, and the write token."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError
from api.schemas import ErrorBody
from nas.settings import Settings
from nas.store import repository as repo
from nas.store.models import Search

log = logging.getLogger("sernas.api")


# The dependencies below are `async def` although they never await: they only read app state, and FastAPI
# runs a plain `def` dependency in its thread pool, one hop there and back each (four per submission).


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


async def get_queued_notifier(request: Request) -> Callable[[str], None]:
    """Tell the app's `on_queued` listeners (e.g. the dispatcher) that a search was queued."""
    app = request.app

    def notify(search_id: str) -> None:
        for listener in app.state.on_queued:
            try:
                listener(app, search_id)
            except Exception:
                log.exception("on_queued listener %r failed for search %s", listener, search_id)

    return notify


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueuedDep = Annotated[Callable[[str], None], Depends(get_queued_notifier)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="Needed for writes (POST) when the server sets SERNAS_API_TOKEN; reads are open.",
)


def write_token_error(settings: Settings, token: str | None) -> ApiError | None:
    """Why a write with bearer `token` (None: none sent) is refused: 401 without one, 403 with a wrong one;
    None when it may go ahead (or the server has no token)."""
    if settings.api_token is None:
        return None
    if not token:
        return ApiError(
            401,
            "unauthorized",
            "this server requires a token for writes: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.api_token.get_secret_value().encode()
    if not hmac.compare_digest(token.encode(), expected):
        return ApiError(403, "forbidden", "the bearer token is not valid for this server")
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, as HTTPBearer reads it."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" and token else None


async def require_write_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Writes need `Authorization: Bearer <token>` when a token is configured (401 without, 403 wrong).

    FastAPI runs this before it validates the body against the schema; a body that is not even JSON
    is refused earlier, by `api.main.JsonBodyCheck`, which asks `write_token_error` first too.
    """
    error = write_token_error(settings, None if credentials is None else credentials.credentials)
    if error is not None:
        raise error


WriteAuth = Annotated[None, Depends(require_write_token)]


# FastAPI would document its own 422 body; ours is ErrorBody like every other error.
VALIDATION: dict[int | str, dict[str, Any]] = {422: {"model": ErrorBody, "description": "invalid request"}}

SearchId = Annotated[
    str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="a search id")
]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route may return."""
    return {code: {"model": ErrorBody} for code in codes}


def get_or_404(sessions: SessionsDep, search_id: str) -> Search:
    search = repo.get_search(sessions, search_id)
    if search is None:
        raise ApiError(404, "not_found", f"no search with id {search_id!r}")
    return search
