"""Every error the API returns, in one shape and from one place.

The body is always `{"error": {"type", "message", "fields": [{"loc", "msg"}], "valid"?}}`:
`message` says what to fix, `fields` names the offending request fields (as FastAPI's `loc`,
e.g. ["body", "corpus", "root"]), and `valid` lists the accepted names when a name was unknown.

Status codes: 400 bad query/header value, 401 missing token, 403 wrong token or a path outside
the allowed folders, 404 unknown id or route, 409 conflicting state (idempotency key reuse,
resuming a completed search, no result yet), 413 body too large, 422 invalid body (schema,
spec, corpus, memory estimate). A 500 means a bug: user input never causes one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from nas.errors import (
    ConfigError,
    DataError,
    GenomeError,
    ResourceError,
    SernasError,
    UnknownNameError,
)
from nas.store.repository import IdempotencyConflictError, InvalidTransitionError, NotFoundError

log = logging.getLogger("sernas.api")

Loc = Sequence[str | int]


class ApiError(Exception):
    """An error a route raises on purpose; rendered as is."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        fields: Iterable[tuple[Loc, str]] = (),
        valid: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type, message
        self.fields = [(list(loc), msg) for loc, msg in fields]
        self.valid = None if valid is None else list(valid)
        self.headers = headers


def error_body(
    type: str, message: str, fields: Iterable[tuple[Loc, str]] = (), valid: Sequence[str] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": type,
        "message": message,
        "fields": [{"loc": list(loc), "msg": msg} for loc, msg in fields],
    }
    if valid is not None:
        error["valid"] = list(valid)
    return {"error": error}


def error_response(
    status: int,
    type: str,
    message: str,
    fields: Iterable[tuple[Loc, str]] = (),
    valid: Sequence[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(type, message, fields, valid), status_code=status, headers=headers)


def pydantic_fields(exc: ValidationError | RequestValidationError, prefix: Loc = ()) -> list[tuple[Loc, str]]:
    """(loc, msg) of each error; the input itself is never echoed (it may be huge or secret)."""
    from nas.spec import STRATEGY_SPECS

    fields = []
    for error in exc.errors():
        msg = NON_FINITE if _non_finite_comparison(error) else error["msg"]
        loc = list(error["loc"])
        # A complete spec validates through the union of strategies, whose tag pydantic puts in the path:
        # the user wrote spec.space.nodes, not spec.darts.space.nodes.
        for i, part in enumerate(loc[:-1]):
            if part == "spec" and loc[i + 1] in STRATEGY_SPECS:
                del loc[i + 1]
                break
        fields.append(([*prefix, *loc], msg))
    return fields


NON_FINITE = "must be a finite number (NaN and Infinity are not JSON numbers)"
_COMPARISONS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"})


def _non_finite_comparison(error: Any) -> bool:
    """A bound check that failed on NaN or an infinity (pydantic also reads the strings "NaN" and
    "inf" as numbers): "less than or equal to 1024" would mislead about a NaN."""
    if error.get("type") not in _COMPARISONS:
        return False
    value = error.get("input")
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def summarise(fields: list[tuple[Loc, str]]) -> str:
    shown = "; ".join(f"{'.'.join(map(str, loc)) or 'request'}: {msg}" for loc, msg in fields[:5])
    more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
    return f"invalid request: {shown}{more}"


def sernas_error_status(exc: SernasError) -> tuple[int, str]:
    """The status and type of an engine or store exception."""
    if isinstance(exc, NotFoundError):
        return 404, "not_found"
    if isinstance(exc, IdempotencyConflictError):
        return 409, "idempotency_conflict"
    if isinstance(exc, InvalidTransitionError):
        return 409, "invalid_transition"
    if isinstance(exc, UnknownNameError):
        return 422, "unknown_name"
    if isinstance(exc, ConfigError):
        return 422, "invalid_config"
    if isinstance(exc, DataError):
        return 422, "invalid_data"
    if isinstance(exc, ResourceError):
        return 422, "insufficient_memory"
    if isinstance(exc, GenomeError):
        return 422, "invalid_genome"
    return 422, "invalid_request"


def api_error_response(exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.type, exc.message, exc.fields, exc.valid, exc.headers)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return api_error_response(exc)


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = pydantic_fields(exc)
    return error_response(422, "validation_error", summarise(fields), fields)


async def _pydantic_validation(_request: Request, exc: Exception) -> JSONResponse:
    # A model built from request data inside a route (routes usually convert these themselves).
    assert isinstance(exc, ValidationError)
    fields = pydantic_fields(exc, ("body",))
    return error_response(422, "validation_error", summarise(fields), fields)


async def _sernas_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SernasError)
    status, type = sernas_error_status(exc)
    valid = exc.valid if isinstance(exc, UnknownNameError) else None
    return error_response(status, type, str(exc), valid=valid)


_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    headers = getattr(exc, "headers", None)
    if status == 404 and message == "Not Found":
        message = "no such route; see /docs for the API"
    elif status == 405:
        message = "method not allowed on this route; see /docs for the API"
        headers = {**(headers or {}), "Allow": ", ".join(sorted(_allowed_methods(request)))}
    type = _HTTP_TYPES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
    return error_response(status, type, message, headers=headers)


def _allowed_methods(request: Request) -> set[str]:
    """The methods some route takes on the request's path. Starlette's own `Allow` names only the
    first route it tried (`Allow: POST` on /searches, which GET lists too); asking every route whether
    it takes the path with each method reads the routes only through their public `matches`."""
    routes = request.app.router.routes
    return {
        method
        for method in ALL_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    }


ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(SernasError, _sernas_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
