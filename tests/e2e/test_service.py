"""The whole service over real HTTP on loopback, with real Ray, real DARTS and real RAVDESS audio,
on SQLite and on PostgreSQL: the happy path, a SIGKILLed search worker, a killed controller, cancel.

Each test starts `sernas serve` (controller + dispatcher + local Ray) in a subprocess with a
4-second lease, and submits tiny emoDARTS searches (2 classes, 8 actors, fold 0 of 4, a few ops per
edge). The fault tests (a killed worker, a killed controller, cancel and resume) take about a minute
each and run in `make test` (CI); the README's demo search, with its 30 retraining epochs, is `slow`.
"""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from pathlib import Path

import pytest

from api.cli import example_body
from nas.cli import main as sernas
from tests.e2e import (
    ACTORS,
    CLASSES,
    FAKE,
    Server,
    event_messages,
    tiny_search,
    wait_until,
    worker_pids,
)
from tests.strategies.conftest import UNSEEN_ACTORS, held_out_files

SEARCH_KEY, RETRAIN_KEY, FINAL_KEY = "fold-0/search", "fold-0/retrain/emodarts", "final/retrain/emodarts"


def _trial(server: Server, search_id: str, key: str) -> dict | None:
    return next((t for t in server.all_trials(search_id, limit=50) if t["key"] == key), None)


def _assert_complete_and_unique(server: Server, search_id: str, search_epochs: int) -> list[dict]:
    """Every trial present exactly once; the search trial has each of its epochs exactly once."""
    trials = server.all_trials(search_id, limit=1)  # one per page: exercises the cursor
    keys = [t["key"] for t in trials]
    assert len(keys) == len(set(keys)), f"duplicated trials: {keys}"
    if not FAKE:
        assert sorted(keys) == sorted([SEARCH_KEY, RETRAIN_KEY, FINAL_KEY])
        assert all(t["state"] == "complete" for t in trials), ({t["key"]: t["state"] for t in trials}, server.output())
        search_trial = next(t for t in trials if t["key"] == SEARCH_KEY)
        assert server.steps(search_trial["id"]) == list(range(1, search_epochs + 1))
    return trials


@pytest.mark.slow
def test_submit_watch_page_export_rebuild_and_predict(server, ravdess_root, tmp_path, capsys):
    """The search `sernas serve --example` submits (the README's demo), end to end."""
    server.start()
    body = example_body(ravdess_root)
    search_id = server.submit(body)
    assert server.search(search_id)["status"] in ("queued", "running")
    assert server.post("/searches", body, expect=200)["id"] == search_id  # idempotent resubmission

    search = server.wait_for(search_id)
    assert search["status"] == "completed", (search["error"], server.output())
    assert search["attempts"] == 1 and search["summary"]["ua_mean"] is not None
    trials = _assert_complete_and_unique(server, search_id, search_epochs=2)
    if FAKE:
        return
    retrain = next(t for t in trials if t["key"] == RETRAIN_KEY)
    assert retrain["ua"] is not None and retrain["n_params"] > 0
    best = server.get(f"/searches/{search_id}/best")
    assert best["id"] == retrain["id"] and best["genome"]["classes"] == ["calm", "angry"]

    # The service commands against the running controller: status, then download the bundle.
    capsys.readouterr()
    assert sernas(["status", search_id, "--url", server.url]) == 0
    assert f"search {search_id}: completed" in capsys.readouterr().out
    bundle = tmp_path / "downloaded.zip"
    assert sernas(["download", search_id, "--url", server.url, "--to", str(bundle)]) == 0
    assert {"genome.json", "weights.safetensors", "metrics.json", "MODEL_CARD.md"} <= set(
        zipfile.ZipFile(bundle).namelist()
    )

    # The download is the search's genome trained on all 8 actors (the final trial); rebuilt outside the
    # service, it predicts the real recordings of 4 actors the service never saw.
    from nas.bundle import load_model, predict_files
    from nas.metrics import classification_report

    genome, model, metrics = load_model(bundle)
    assert genome.classes == ("calm", "angry") and sum(p.numel() for p in model.parameters()) > 0
    final = next(t for t in trials if t["key"] == FINAL_KEY)
    assert genome.provenance.trial_id == final["id"] and final["stage"] == "final"
    assert set(metrics["trained_on"]["speakers"]) | set(metrics["validation_speakers"]) == set(ACTORS)
    unseen = held_out_files(ravdess_root, UNSEEN_ACTORS)
    assert len(unseen) == 64
    predictions = predict_files(bundle, unseen)
    assert all(p.error is None and p.label in genome.classes for p in predictions)
    truth = [genome.classes.index(CLASSES[p.path.name.split("-")[2]]) for p in predictions]
    probs = [[p.probabilities[c] for c in genome.classes] for p in predictions]
    ua = classification_report(truth, probs, genome.classes)["ua"]
    assert ua >= 0.6, f"the example's model is at chance level on unseen actors (UA {ua:.3f})"


def test_a_sigkilled_search_worker_resumes_from_its_checkpoint(server, ravdess_root, sessions):
    server.start()
    search_epochs = 3
    body = tiny_search(ravdess_root, name="killed", search_epochs=search_epochs, train_epochs=6)
    search_id = server.submit(body)
    trial = wait_until(lambda: _trial(server, search_id, SEARCH_KEY), message="no search trial")
    wait_until(lambda: len(server.steps(trial["id"])) >= 1, message="no epoch reported")
    (pid,) = worker_pids(sessions, search_id)
    assert pid != server.proc.pid
    os.kill(pid, signal.SIGKILL)  # not a polite stop: the worker process dies at once
    before_kill = {s["step"]: s["metrics"] for s in server.get(f"/trials/{trial['id']}")["steps"]}

    search = server.wait_for(search_id)
    assert search["status"] == "completed", (search["error"], server.output())
    assert search["attempts"] == 2
    first, second = worker_pids(sessions, search_id)
    assert (first, second != pid) == (pid, True)
    messages = event_messages(sessions, search_id)
    assert any("worker died" in m for m in messages)
    assert any("expired; re-queued" in m for m in messages)
    _assert_complete_and_unique(server, search_id, search_epochs)
    if FAKE:
        return
    # Resumed in the same folder from its checkpoint: the epochs reported before the kill are kept
    # (a resume reports its restored epochs again, keyed by epoch: the same values, never a
    # duplicate), and the architecture log (one line per search epoch) has each epoch once.
    assert sum(m.startswith("resuming the search in ") for m in messages) == 1
    steps = {s["step"]: s["metrics"] for s in server.get(f"/trials/{trial['id']}")["steps"]}
    assert before_kill and {step: steps[step] for step in before_kill} == before_kill
    evolution = Path(_result_dir(sessions, search_id)) / "folds/fold-0/search/genomes.jsonl"
    epochs = [json.loads(line)["epoch"] for line in evolution.read_text().splitlines()]
    assert epochs == list(range(1, search_epochs + 1))


def _result_dir(sessions, search_id: str) -> str:
    from nas.store import repository

    return repository.get_search(sessions, search_id).result_dir


def test_a_killed_controller_loses_nothing_queued_or_running(server, ravdess_root, sessions):
    server.env["SERNAS_MAX_RUNNING"] = "1"
    server.start()
    running = server.submit(tiny_search(ravdess_root, name="running", search_epochs=2, train_epochs=4))
    queued = server.submit(tiny_search(ravdess_root, name="queued", search_epochs=2, train_epochs=4))
    trial = wait_until(lambda: _trial(server, running, SEARCH_KEY), message="no search trial")
    wait_until(lambda: len(server.steps(trial["id"])) >= 1, message="no epoch reported")
    assert server.search(queued)["status"] == "queued"

    server.kill(signal.SIGKILL)  # the controller, its dispatcher and its local Ray, all at once
    server.start()  # same database, same data dir, a new dispatcher

    for search_id, attempts in ((running, 2), (queued, 1)):
        search = server.wait_for(search_id)
        assert search["status"] == "completed", (search["error"], server.output())
        assert search["attempts"] == attempts
    _assert_complete_and_unique(server, running, search_epochs=2)
    _assert_complete_and_unique(server, queued, search_epochs=2)


def test_cancel_stops_a_running_search_promptly_and_resume_completes_it(server, ravdess_root, sessions):
    server.start()
    search_id = server.submit(tiny_search(ravdess_root, name="cancelled", search_epochs=2, train_epochs=4))
    trial = wait_until(lambda: _trial(server, search_id, SEARCH_KEY), message="no search trial")
    wait_until(lambda: len(server.steps(trial["id"])) >= 1, message="no epoch reported")

    asked = time.monotonic()
    assert server.post(f"/searches/{search_id}/cancel")["cancel_requested"] is True
    search = server.wait_for(search_id, timeout=60)
    took = time.monotonic() - asked
    assert search["status"] == "cancelled", (search["error"], server.output())
    print(f"cancelled {took:.1f} s after the request")
    steps_at_cancel = server.steps(trial["id"])
    time.sleep(3)
    assert server.steps(trial["id"]) == steps_at_cancel, "the search kept working after its cancel"
    # Recorded by the runner at its next batch ("cancelled"), or, when a batch outlasts the lease
    # (which is not renewed once a cancel is requested), by the lease's expiry.
    messages = event_messages(sessions, search_id)
    assert any(m == "cancelled" or m.endswith("cancelled as requested") for m in messages), messages

    assert server.post(f"/searches/{search_id}/resume")["status"] == "queued"
    search = server.wait_for(search_id)
    assert search["status"] == "completed", (search["error"], server.output())
    assert search["attempts"] == 2
    _assert_complete_and_unique(server, search_id, search_epochs=2)
