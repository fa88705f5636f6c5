"""The service commands (api/cli.py) without a server process: argument handling, the HTTP client
against the in-process app, `worker`'s ray command, `serve --example`'s search, the service glue."""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api import cli
from api.schemas import SearchCreate
from api.service import create_service
from nas.cli import main as sernas
from nas.errors import ConfigError, SernasError
from nas.settings import Settings
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.workers import ThreadBackend, fake_search


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sernas")
    cli.add_commands(parser.add_subparsers(required=True))
    return parser.parse_args(list(argv))


def test_submit_options_become_the_api_body(tmp_path):
    args = _parse(
        "submit", "--corpus", "ravdess", "--data", str(tmp_path), "--preset", "emodarts-demo",
        "--classes", "calm,angry", "--speakers", "Actor_01,Actor_02", "--label-map", "excited=happy",
        "--set", "options.search_epochs=2", "--set", "space.cnn_ops=[\"max_pool_3x3\"]",
        "--folds", "4", "--only-folds", "0,2", "--gpus", "1", "--seed", "7", "--threads", "2", "--name", "mine",
        "--idempotency-key", "k1",
    )  # fmt: skip
    body = cli.submit_body(args)
    assert body == {
        "name": "mine",
        "preset": "emodarts-demo",
        "corpus": {
            "name": "ravdess",
            "root": str(tmp_path.resolve()),
            "classes": ["calm", "angry"],
            "speakers": ["Actor_01", "Actor_02"],
            "label_map": {"excited": "happy"},
        },
        "overrides": {"options.search_epochs": 2, "space.cnn_ops": ["max_pool_3x3"]},
        "seed": 7,
        "device": "auto",
        "gpus": 1.0,
        "threads": 2,
        "folds": {"n_folds": 4, "only": [0, 2]},
        "idempotency_key": "k1",
    }
    SearchCreate.model_validate(body)  # the API's schema accepts it


def test_submit_needs_a_corpus_or_a_spec(tmp_path):
    with pytest.raises(ConfigError, match="give --corpus and --data"):
        cli.submit_body(_parse("submit", "--corpus", "ravdess"))
    spec = tmp_path / "spec.json"
    spec.write_text('{"corpus": {"name": "ravdess", "root": "/data"}}')
    body = cli.submit_body(_parse("submit", "--spec", str(spec)))
    assert body == {
        "spec": {"corpus": {"name": "ravdess", "root": "/data"}},
        "name": "ravdess from spec.json",
    }
    with pytest.raises(ConfigError, match="leave out --corpus"):
        cli.submit_body(_parse("submit", "--spec", str(spec), "--corpus", "ravdess"))


def test_the_example_search_is_a_valid_submission(ravdess_root):
    body = cli.example_body(ravdess_root)
    created = SearchCreate.model_validate(body)
    assert created.preset == "emodarts-demo" and created.folds.only == (0,)
    assert created.corpus.speakers == tuple(f"Actor_{i:02d}" for i in range(1, 9))


def test_serve_example_refuses_a_folder_without_ravdess(tmp_path):
    with pytest.raises(ConfigError, match="no RAVDESS data"):
        cli.serve_command(_parse("serve", "--example", "--example-data", str(tmp_path)))


def test_worker_prints_and_runs_ray_start(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(subprocess, "call", lambda command: ran.append(command) or 0)
    assert cli.worker_command(_parse("worker", "--address", "10.0.0.5:6379", "--num-gpus", "2")) == 0
    ray = str(Path(sys.executable).parent / "ray")
    assert ran == [[ray, "start", "--address", "10.0.0.5:6379", "--num-gpus", "2", "--block"]]
    assert capsys.readouterr().out.strip() == f"sernas worker: {ray} start --address 10.0.0.5:6379 --num-gpus 2 --block"

    ran.clear()
    assert cli.worker_command(_parse("worker", "--address", "h:6379", "--dry-run")) == 0
    assert ran == []


def test_worker_needs_an_address(monkeypatch):
    monkeypatch.delenv("SERNAS_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="--address"):
        cli.worker_command(_parse("worker"))


def test_worker_help_explains_how_a_gpu_node_joins(capsys):
    with pytest.raises(SystemExit):
        _parse("worker", "--help")
    text = capsys.readouterr().out
    assert "ray start --address HOST:PORT --num-gpus N --block" in text and "RAY_AUTH_TOKEN" in text


def test_client_commands_against_the_service(db_url, tmp_path, monkeypatch, capsys):
    """status and download through the HTTP client, with the dispatcher running the fake search."""
    settings = Settings(data_dir=tmp_path / "sernas", database_url=db_url, data_roots=[tmp_path], poll_seconds=0.05)
    app = create_service(settings, backend=ThreadBackend(), search_fn=fake_search)
    with TestClient(app) as http:

        def client(base_url: str, headers: dict, timeout: float) -> TestClient:
            http.headers.update(headers)
            return http

        monkeypatch.setattr(httpx, "Client", client)
        sessions = app.state.sessions
        from tests.workers import tiny_spec

        search_id = repo.create_search(sessions, tiny_spec().model_dump(mode="json"), "via cli", "darts").id
        assert sernas(["status", search_id, "--watch", "--url", "http://testserver"]) == 0
        out = capsys.readouterr().out
        assert f"search {search_id}: completed, attempt 1, 4/4 trials finished" in out

        # The fake writes no model: download says why, with the API's message.
        assert sernas(["download", search_id, "--url", "http://testserver"]) == 2
        assert "holds no model" in capsys.readouterr().err
        # A real result folder: the bundle downloads.
        _write_model(Path(repo.get_search(sessions, search_id).result_dir))
        to = tmp_path / "bundle.zip"
        assert sernas(["download", search_id, "--url", "http://testserver", "--to", str(to)]) == 0
        assert "genome.json" in zipfile.ZipFile(to).namelist()

        assert sernas(["status", "--url", "http://testserver"]) == 0
        assert f"{search_id}  completed" in capsys.readouterr().out
        assert sernas(["status", "nope", "--url", "http://testserver"]) == 2
        assert "no search with id 'nope'" in capsys.readouterr().err
        assert app.state.dispatcher is not None
    assert app.state.dispatcher is None  # stopped with the app
    assert repo.get_search(sessions, search_id).status == SearchStatus.COMPLETED


def test_an_unreachable_controller_says_how_to_start_one():
    client = cli.Client("http://127.0.0.1:9", timeout=2)
    with pytest.raises(SernasError, match="start it with `sernas serve`"):
        client.get("/searches")


def test_the_dispatcher_can_be_switched_off(db_url, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=db_url, dispatcher=False)
    app = create_service(settings, backend=ThreadBackend())
    with TestClient(app) as http:
        assert http.get("/health").status_code == 200
        assert app.state.dispatcher is None


def _write_model(folder: Path) -> None:
    from nas.bundle import save_model
    from nas.features.spec import FeatureSpec, Mfcc
    from nas.genome import CnnBiLstmAttArchitecture, Genome
    from nas.models import build

    genome = Genome(
        input=FeatureSpec(frontends=(Mfcc(n_mfcc=40),), duration_s=4.0, pool_to=(40, 64)),
        architecture=CnnBiLstmAttArchitecture(conv_channels=(4,), lstm_hidden=8, dense=8),
        classes=("calm", "angry"),
    )
    save_model(folder, genome, build(genome), {"ua": 0.5})
