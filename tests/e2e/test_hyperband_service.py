"""hyperband through the service on this 2-CPU machine: submitted over REST, the search's own Ray task holds
no CPU, so its Tune trials (one CPU each) run two at a time instead of waiting on it forever; every Tune
trial appears in the trials table with its epochs and state, and the export predicts held-out actors."""

from __future__ import annotations

import json
import zipfile

import httpx
import pytest

from nas.strategies.hyperband import experiment_dir
from tests.e2e import ACTORS, CLASSES, event_messages
from tests.strategies.conftest import UNSEEN_ACTORS, held_out_accuracy

pytestmark = pytest.mark.slow


def test_hyperband_search_over_rest_with_tune_trials(server, ravdess_root, tmp_path, sessions):
    server.start()
    body = {
        "name": "hyperband-e2e",
        "strategy": "hyperband",
        "preset": "cnn-families-demo",
        "corpus": {
            "name": "ravdess",
            "root": str(ravdess_root),
            "classes": sorted(CLASSES.values()),
            "speakers": ACTORS,
        },
        "overrides": {"options.n_trials": 9, "options.max_epochs": 9},
        "folds": {"n_folds": 4, "only": [0]},
        "device": "cpu",
    }
    search_id = server.submit(body)
    search = server.wait_for(search_id)
    assert search["status"] == "completed", (search["error"], server.output())
    assert search["strategy"] == "hyperband" and search["summary"]["ua_mean"] > 0.5

    messages = event_messages(sessions, search_id)
    assert any("0 GPU, 0 CPU" in m for m in messages), "the search's own task reserves no CPU"

    trials = server.all_trials(search_id, limit=3)
    keys = [t["key"] for t in trials]
    assert len(keys) == len(set(keys)), f"duplicated trials: {keys}"
    searched = [t for t in trials if t["stage"] == "search"]
    assert len(searched) == 9 and all(t["state"] in ("complete", "pruned") for t in searched)
    assert any(t["state"] == "pruned" for t in searched), "Hyperband stopped no trial early"
    for trial in searched:
        epochs = server.steps(trial["id"])
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) in (1, 3, 9), (trial["key"], epochs)
        assert trial["n_params"] > 0, "parameter count reported"

    folder = tmp_path / "sernas" / "searches" / search_id
    rows = [
        json.loads(line)
        for result in experiment_dir(folder, 0).glob("*/result.json")
        for line in result.read_text().splitlines()
    ]
    spans = [(r["finished_at"] - r["time_this_iter_s"], r["finished_at"], r["trial_id"]) for r in rows]
    assert any(a[2] != b[2] and a[0] < b[1] and b[0] < a[1] for a in spans for b in spans), "never 2 trials at once"

    (final,) = [t for t in trials if t["stage"] == "final"]
    assert final["state"] == "complete"
    response = httpx.get(f"{server.url}/searches/{search_id}/export", timeout=60)
    assert response.status_code == 200
    bundle = tmp_path / "model.zip"
    bundle.write_bytes(response.content)
    assert "genome.json" in zipfile.ZipFile(bundle).namelist()
    correct, n = held_out_accuracy(bundle, ravdess_root, UNSEEN_ACTORS)  # the final model never saw them
    assert correct / n >= 0.65, f"{correct}/{n} files of unseen actors right"
