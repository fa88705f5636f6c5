"""The OpenAPI document describes what the service does: schemathesis, with all of its checks, against a
live server on loopback, with and without a write token, finds no failure (not only no server error).

The server is real uvicorn on a fresh SQLite database, serving `create_app` without a dispatcher, so a
submission is only queued. A completed search with trials is there from the start, and schemathesis is
told its ids, so the routes of one search and one trial are exercised beyond their 404s (completed, so
that its event stream ends after the replay instead of waiting for news).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
import uvicorn

from api.main import create_app
from nas.settings import Settings
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.api import TOKEN, api_settings
from tests.api.test_reads import add_trials, queue_search

MAX_EXAMPLES = 8  # per operation and phase; enough to reach every status a route documents

# What no schema can say, so schemathesis is told it instead of finding it "wrong":
# - a trials cursor is opaque: any string fits its schema, but only a next_cursor the server gave out
#   (for the same sort) is accepted, and any other is a 400;
# - a submission is checked against what the schema cannot see (the corpus on disk, the presets and
#   corpus readers by name, the folds its speakers allow), so a body that fits the schema may be a 422.
CONFIG = """
max-stream-events = 1
request-timeout = 10

[[operations]]
include-path = "/searches/{search_id}/trials"
include-method = "GET"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path = "/searches"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


class LiveServer:
    """uvicorn serving `create_app(settings)` from a thread, on a loopback port it has already bound."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.socket = socket.socket()
        # Accepted connections inherit it: without, each answer on a kept-alive connection waits ~40 ms for
        # the client's delayed ACK (Nagle), which made the schemathesis run 15 times slower.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the server did not start"
            self.thread.join(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


@pytest.fixture(params=[None, TOKEN], ids=["open", "token"])
def live(request: pytest.FixtureRequest, tmp_path: Path, ravdess_root: Path) -> Iterator[LiveServer]:
    settings = api_settings(f"sqlite:///{tmp_path / 'sernas.db'}", tmp_path, ravdess_root, api_token=request.param)
    with LiveServer(settings) as server:
        yield server


def test_schemathesis_finds_no_failure_with_all_checks(live: LiveServer, tmp_path: Path):
    sessions = live.app.state.sessions
    search_id = queue_search(sessions)
    trial_id = add_trials(sessions, search_id, 3)[-1]
    repo.mark_finished(sessions, search_id, SearchStatus.COMPLETED, summary={"ua_mean": 0.5})
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'{CONFIG}\n[parameters]\nsearch_id = "{search_id}"\ntrial_id = {trial_id}\n')
    token = live.app.state.settings.api_token
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{live.url}/openapi.json"),
        *("--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "15", "--workers", "1"),
        *("--no-color", "--suppress-health-check", "all"),
        *(("--header", f"Authorization: Bearer {token.get_secret_value()}") if token else ()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
    # Every generated case passed; warnings are allowed (most schema-valid submissions name no corpus on disk).
    assert re.search(r"^ *(\d+) generated, \1 passed", done.stdout, re.MULTILINE), done.stdout[-6000:]


@pytest.fixture
def document(tmp_path: Path, ravdess_root: Path) -> dict:
    settings = api_settings(f"sqlite:///{tmp_path / 'sernas.db'}", tmp_path, ravdess_root)
    return create_app(settings).openapi()


def test_the_submission_schema_says_corpus_or_spec(document: dict):
    body_schema = document["components"]["schemas"]["SearchCreate"]
    validator = jsonschema.Draft202012Validator({**body_schema, "components": document["components"]})
    corpus = {"name": "ravdess", "root": "ravdess"}
    assert validator.is_valid({"name": "x", "corpus": corpus})
    assert validator.is_valid({"name": "x", "corpus": corpus, "spec": None})
    assert not validator.is_valid({"name": "x"})
    assert not validator.is_valid({"name": "x", "corpus": None})
    spec_only = {"name": "x", "spec": {"strategy": "darts", "corpus": corpus}}
    assert not validator.is_valid({**spec_only, "seed": 1})
    assert not validator.is_valid({**spec_only, "corpus": None})


def test_errors_are_documented_as_json_and_no_token_means_no_security_scheme(document: dict, tmp_path, ravdess_root):
    events = document["paths"]["/searches/{search_id}/events"]["get"]["responses"]
    assert set(events["200"]["content"]) == {"text/event-stream"}
    assert {status: set(r["content"]) for status, r in events.items() if status != "200"} == {
        status: {"application/json"} for status in ("400", "404", "422")
    }
    cancel = document["paths"]["/searches/{search_id}/cancel"]["post"]
    assert "securitySchemes" not in document["components"] and "security" not in cancel

    guarded = create_app(api_settings(f"sqlite:///{tmp_path / 'g.db'}", tmp_path, ravdess_root, api_token=TOKEN))
    guarded_document = guarded.openapi()
    assert guarded_document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert guarded_document["paths"]["/searches/{search_id}/cancel"]["post"]["security"] == [{"token": []}]


def test_a_method_a_path_lacks_is_answered_with_every_method_it_has(live: LiveServer):
    for method, path, allowed in [
        ("OPTIONS", "/searches", "GET, POST"),
        ("DELETE", "/searches/abc", "GET"),
        ("PUT", "/searches/abc/cancel", "POST"),
    ]:
        response = httpx.request(method, f"{live.url}{path}")
        assert (response.status_code, response.headers["allow"]) == (405, allowed), response.text
        assert response.json()["error"]["type"] == "method_not_allowed"


def test_a_spec_that_is_no_object_is_a_422_naming_it(live: LiveServer):
    # Found by schemathesis: the strategy discriminator read `.strategy` off a list, a 500.
    for spec in ([None, None], 3, "darts"):
        response = httpx.post(f"{live.url}/searches", json={"name": "x", "spec": spec}, headers=_auth(live))
        assert response.status_code == 422, response.text
        assert ["body", "spec"] in [field["loc"] for field in response.json()["error"]["fields"]]


def _auth(live: LiveServer) -> dict[str, str]:
    token = live.app.state.settings.api_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
