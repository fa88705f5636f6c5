"""The FastAPI application: `create_app(settings)`.

Run it with `uvicorn --factory api.main:create_app` (settings from SERNAS_* variables) or through
`sernas serve`. The app only talks to the study database; it never starts Ray or a dispatcher
itself. Its /docs (Swagger UI) and /redoc (ReDoc) pages load their assets from the app itself, so
they work offline; a JSON body is checked by `JsonBodyCheck` (after the write token) before any
route reads it. Whoever serves it adds Ray and the dispatcher through the lifecycle hooks:

    def start_dispatcher(app: FastAPI) -> None:      # sync or async; gets the app
        app.state.dispatcher = Dispatcher(app.state.settings, app.state.sessions)
        app.state.dispatcher.start()

    def stop_dispatcher(app: FastAPI) -> None:
        app.state.dispatcher.stop()

    app = create_app(
        settings,
        on_startup=[start_dispatcher],
        on_shutdown=[stop_dispatcher],
        on_queued=[lambda app, search_id: app.state.dispatcher.wake()],
    )

Hooks may be sync or async; sync ones run on the event loop, so they must return quickly (start
a thread rather than block). Startup hooks run in order once the database is migrated and `app.state.engine`,
`app.state.sessions` and `app.state.settings` are set; if one raises, the server does not start.
Shutdown hooks run in reverse order before the engine is disposed, each even if an earlier one
raised (errors are logged) and even when startup failed part-way, so make them tolerate a
partial start.

`on_queued` callables get the app and the id of a search it has just queued (a new submission, or a
resume); they run in the request's worker thread after the commit, must be quick (e.g. wake the
dispatcher instead of waiting for its next poll), and their errors are logged, never returned.
"""

from __future__ import annotations

import email.message
import inspect
import json
import logging
import math
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from itertools import islice
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import bearer_token, write_token_error
from api.errors import NON_FINITE, ApiError, api_error_response, error_body, install_error_handlers, summarise
from api.routes import ROUTERS
from api.routes.dashboard import install_dashboard
from nas.settings import Settings
from nas.store.db import make_engine, migrate, session_factory

log = logging.getLogger("sernas.api")

Hook = Callable[[FastAPI], Any | Awaitable[Any]]

DESCRIPTION = """Neural-architecture search for speech emotion recognition.

Submit a search (`POST /searches`), follow it live (`GET /searches/{id}/events`, Server-Sent
Events), browse its trials, and export the best model as a portable bundle. Writes need
`Authorization: Bearer <token>` when the server has a token. Every error is JSON:
`{"error": {"type", "message", "fields": [{"loc", "msg"}]}}`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    on_queued: Sequence[Callable[[FastAPI, str], Any]] = (),
) -> FastAPI:
    """The REST controller over the study database named by `settings` (default: from the environment)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.db_url)
        try:
            await run_in_threadpool(migrate, engine)
            app.state.engine, app.state.sessions = engine, session_factory(engine)
            try:
                for hook in on_startup:
                    await _call(hook, app)
                yield
            finally:
                for hook in reversed(on_shutdown):
                    try:
                        await _call(hook, app)
                    except Exception:
                        log.exception("shutdown hook %r failed", hook)
        finally:
            engine.dispose()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets that fastapi-offline ships and this app serves
    # itself (under /static-offline-docs): the docs work on a machine without internet access.
    app = FastAPIOffline(
        title="sernas",
        description=DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
        # Swagger UI would otherwise send the document to the public validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.on_queued = list(on_queued)
    # Set by `sernas serve` when a stop is asked for: open event streams end then (api.routes.events).
    app.state.stopping = threading.Event()
    app.openapi = _openapi_as_served(app, settings)  # type: ignore[method-assign]
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_dashboard(app)
    app.add_middleware(JsonBodyCheck)
    # Added last, so outermost: it bounds what JsonBodyCheck reads.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def _openapi_as_served(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, corrected where FastAPI's document would not describe what this server does.

    - Every error is JSON (api.errors), but FastAPI files a route's error responses under the route's
      own media type: the events route's 400/404/422 would read as text/event-stream.
    - Without a write token nothing needs credentials, so no security scheme is declared (a client
      generated from the document would otherwise ask for a token that no request needs).
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()  # caches it in app.openapi_schema, which the edits below change
            for operation in _operations(document):
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content")
                    if status[:1] in ("4", "5") and content and "application/json" not in content:
                        response["content"] = {"application/json": next(iter(content.values()))}
                if settings.api_token is None:
                    operation.pop("security", None)
            if settings.api_token is None:
                document.get("components", {}).pop("securitySchemes", None)
        return app.openapi_schema

    return openapi


def _operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in document.get("paths", {}).values():
        yield from (operation for method, operation in path_item.items() if method in HTTP_METHODS)


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


async def _call(hook: Hook, app: FastAPI) -> None:
    result = hook(app)
    if inspect.isawaitable(result):
        await result


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sernas")
    except PackageNotFoundError:
        return "0+unknown"


class _BodyTooLarge(HTTPException):
    """Raised from `receive`: FastAPI re-raises HTTPExceptions from body reading, so the app's
    handler renders it (a 413 in the usual error shape) instead of a 400 "error parsing the body"."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large(f"more than {max_bytes} bytes sent", max_bytes))


def _too_large(what: str, max_bytes: int) -> str:
    return f"request body too large ({what}); the limit is {max_bytes} bytes (SERNAS_MAX_BODY_BYTES)"


class BodySizeLimit:
    """Pure ASGI middleware: a request body above `max_bytes` gets a 413 JSON error.

    A declared Content-Length above the limit is refused before the body is read; a chunked (or
    understated) body is counted as it streams, and refused as soon as it crosses the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, f"declared {declared} bytes")
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:  # the app answered before reading it all; nothing more to say
                return
            await self._refuse(scope, send, f"more than {self.max_bytes} bytes sent")

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        from starlette.responses import JSONResponse

        response = JSONResponse(
            error_body("payload_too_large", _too_large(what, self.max_bytes)),
            status_code=413,
            headers={"Connection": "close"},
        )

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


def _content_length(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length") or "")
    except ValueError:
        return None


MAX_JSON_DEPTH = 64  # nested arrays and objects in a body; a complete spec needs fewer than 10
MAX_REPORTED = 20  # non-finite numbers named in one error: a body of a million NaNs gets a short answer
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class JsonBodyCheck:
    """Pure ASGI middleware: a JSON body must be UTF-8, well-formed, within MAX_JSON_DEPTH and free
    of NaN and Infinity, or the request gets a 422 that says where and what, before any route sees it.

    It sits in front of FastAPI because FastAPI parses the body before it runs any dependency: a
    write with a broken body would learn about its body before it learned that it lacks the token.
    Here a write (any method but GET, HEAD, OPTIONS) with a broken body gets the token's 401 or 403
    first; a write with a sound body goes on to `require_write_token`, which FastAPI runs before it
    validates the body against the schema. Requests that FastAPI does not read as JSON pass as they are.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        error = json_body_error(body) if body else None  # an empty body: FastAPI says "Field required"
        if error is None:
            await self.app(scope, _replay(body, receive), send)
            return
        settings: Settings = scope["app"].state.settings
        error = write_token_error(settings, bearer_token(_header(scope, b"authorization"))) or error
        await api_error_response(error)(scope, receive, send)


def json_body_error(body: bytes) -> ApiError | None:
    """Why `body` is not a JSON document the API can take, or None."""
    try:
        text = body.decode("utf-8-sig")  # JSON is UTF-8 (RFC 8259), which may start with a BOM
    except UnicodeDecodeError as exc:
        where = f"byte 0x{body[exc.start]:02x} at offset {exc.start}"
        return _body_error(f"not UTF-8 text ({where}); send JSON encoded as UTF-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return _body_error(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except RecursionError:
        return _too_deep()
    except ValueError:  # an integer longer than Python converts
        return _body_error(f"holds an integer with more than {sys.get_int_max_str_digits()} digits")
    return _document_error(document)


def _document_error(document: Any) -> ApiError | None:
    """A body nested deeper than MAX_JSON_DEPTH, or the fields that hold NaN or an infinity (Python's
    json reads NaN, Infinity and numbers such as 1e999; JSON has no such numbers)."""
    wrapped = {"body": document}  # so that locations start with "body", as FastAPI's do
    try:
        if not _any_non_finite(wrapped, 0):
            return None
    except _TooDeep:
        return _too_deep()
    fields = [(loc, NON_FINITE) for loc in islice(_non_finite_locs(wrapped, []), MAX_REPORTED)]
    return ApiError(422, "validation_error", summarise(fields), fields)


class _TooDeep(Exception):
    pass


def _any_non_finite(container: dict[str, Any] | list[Any], depth: int) -> bool:
    """The quick pass over every value (a megabyte of JSON in tens of milliseconds): no locations."""
    if depth > MAX_JSON_DEPTH:
        raise _TooDeep
    found = False
    for value in container.values() if type(container) is dict else container:
        kind = type(value)
        if kind is float:
            found = found or not math.isfinite(value)
        elif kind is dict or kind is list:
            found = _any_non_finite(value, depth + 1) or found  # not `or` first: a later part may be too deep
    return found


def _non_finite_locs(container: dict[str, Any] | list[Any], loc: list[str | int]) -> Iterator[list[str | int]]:
    items = container.items() if type(container) is dict else enumerate(container)
    for key, value in items:
        kind = type(value)
        if kind is float and not math.isfinite(value):
            yield [*loc, key]
        elif kind is dict or kind is list:
            yield from _non_finite_locs(value, [*loc, key])


def _too_deep() -> ApiError:
    return _body_error(f"nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")


def _body_error(message: str) -> ApiError:
    fields: list[tuple[list[str | int], str]] = [(["body"], message)]
    return ApiError(422, "validation_error", summarise(fields), fields)


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI reads this request's body as JSON: the same content types it parses."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (BodySizeLimit, outside, bounds it), or None when the client disconnected."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then what the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
