"""The service: the REST controller plus, in the same process, the dispatcher and (by default) a local Ray.

`create_service(settings)` is `api.main.create_app` with two lifecycle hooks: on startup a
`workers.Dispatcher` is started on the app's database sessions (unless `settings.dispatcher` is
false, e.g. for a second, read-mostly controller); it connects to Ray from its own thread (a local
Ray by default, or the cluster at SERNAS_RAY_ADDRESS / RAY_ADDRESS), so the API answers at once
while Ray starts. Once connected, the dispatcher reads the cluster's nodes every poll
(`Dispatcher.cluster`), and submissions that ask one node for more GPUs or CPUs than any node has
are refused against it; until then they are queued, and the dispatcher fails such a search when it
claims it. On shutdown the dispatcher stops and the local Ray with it; searches still
running are re-queued by their lease and resume from their checkpoints on the next start.

Serve it with `sernas serve` (`StoppingServer`), or `uvicorn --factory api.service:create_service` (settings from
SERNAS_* variables; plain uvicorn then waits, when stopped, for open event streams to close, unless given
`--timeout-graceful-shutdown`).
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from api.main import create_app
from nas.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("sernas.api")


def dispatcher_hooks(settings: Settings, **dispatcher_options: Any) -> tuple[Any, Any]:
    """(startup, shutdown) hooks that run a `Dispatcher` beside the app; options go to the Dispatcher."""

    def start_dispatcher(app: FastAPI) -> None:
        app.state.dispatcher = None
        if not settings.dispatcher:
            log.info("dispatcher disabled (SERNAS_DISPATCHER=false): this controller only queues searches")
            return
        from workers.dispatcher import Dispatcher

        app.state.dispatcher = Dispatcher(settings, app.state.sessions, **dispatcher_options).start()

    def stop_dispatcher(app: FastAPI) -> None:
        dispatcher = getattr(app.state, "dispatcher", None)
        if dispatcher is not None:
            dispatcher.stop()
            app.state.dispatcher = None

    return start_dispatcher, stop_dispatcher


def create_service(settings: Settings | None = None, **dispatcher_options: Any) -> FastAPI:
    """The controller app with the dispatcher (and Ray) started and stopped with it."""
    settings = settings or Settings()
    start, stop = dispatcher_hooks(settings, **dispatcher_options)
    return create_app(settings, on_startup=[start], on_shutdown=[stop])


class StoppingServer(uvicorn.Server):
    """uvicorn's server, which also tells the app when a stop is asked for (`stopping`: the app's
    `state.stopping`). uvicorn waits for every open connection to close before it stops, and a dashboard's event
    stream of a running search stays open for as long as the search runs: told, the streams end within a poll,
    and the stop takes a second, not the search's hours."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)
