"""`sernas serve` stops cleanly on SIGTERM, as on SIGINT, and prints no noise when its output is not a terminal.

A real `sernas serve` (controller, dispatcher, local Ray) in a subprocess on a free loopback port and a
fresh SQLite database, its output in a file; a tiny emoDARTS search is running when the signal comes, and a client
follows its event stream, as an open dashboard does: the stop must not wait for the search to end.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from nas.store import repository as repo
from nas.store.db import make_engine, session_factory
from tests.e2e import Server, tiny_search, wait_until, worker_pids

# What the start and stop printed before (issue 15): Alembic's plugin lines, Ray's banner and its token
# notice, and the native stack dump that Ray's failure-signal handler writes on SIGTERM.
NOISE = (
    "setup plugin alembic",
    "Context impl",
    "Started a local Ray instance",
    "Token authentication is enabled",
    "SIGTERM received",
)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_shuts_down_cleanly_and_leaves_the_running_search_resumable(
    stop_signal: signal.Signals, tmp_path: Path, ravdess_root: Path
):
    db_url = f"sqlite:///{tmp_path / 'sernas.db'}"
    server = Server(tmp_path, db_url, [ravdess_root])
    server.start()
    try:
        # Printed (flushed) while the server runs, though its output is a file.
        assert "sernas: serving on " in server.output()
        search_id = server.submit(tiny_search(ravdess_root, name="interrupted", search_epochs=2, train_epochs=4))
        engine = make_engine(db_url)
        sessions = session_factory(engine)
        wait_until(lambda: worker_pids(sessions, search_id), timeout=300, message="the search did not start")
        streamed: list[str] = []
        follower = threading.Thread(target=_follow, args=(f"{server.url}/searches/{search_id}/events", streamed))
        follower.start()
        wait_until(lambda: "event: status" in streamed, message="the event stream did not start")

        server.proc.send_signal(stop_signal)  # the server process only, as `docker stop` or `kill` does
        assert server.proc.wait(timeout=120) == 0, server.output()
        follower.join(timeout=30)
        assert not follower.is_alive() and "event: end" not in streamed  # closed by the stop, not by the search
    finally:
        server.stop()
    output = server.output()
    assert "Application shutdown complete" in output  # the shutdown hooks, the dispatcher's stop among them, ran
    assert f"sernas: stopped by {stop_signal.name}" in output
    assert [line for line in output.splitlines() if any(noise in line for noise in NOISE)] == []

    search = repo.get_search(sessions, search_id)
    engine.dispose()
    # Left to its lease, which re-queues it on the next start (it resumes from its checkpoint): not failed,
    # not cancelled, no error.
    assert (search.status.value, search.error, search.attempts) == ("running", None, 1)


def _follow(url: str, lines: list[str]) -> None:
    """Read a search's event stream until the server closes it."""
    with httpx.stream("GET", url, timeout=None) as response:
        for line in response.iter_lines():
            lines.append(line)
