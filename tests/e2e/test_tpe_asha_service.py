"""tpe-asha through the service: submitted over REST, its trials run as Ray tasks of a real local Ray,
every Optuna trial appears in the trials table with its epochs and state, and the export predicts."""

from __future__ import annotations

import zipfile

import httpx
import pytest

from tests.e2e import ACTORS, CLASSES, event_messages
from tests.strategies.conftest import UNSEEN_ACTORS, held_out_accuracy

pytestmark = pytest.mark.slow


def test_tpe_asha_search_over_rest_with_ray_trials(server, ravdess_root, tmp_path, sessions):
    server.start()
    body = {
        "name": "tpe-e2e",
        "strategy": "tpe-asha",
        "preset": "bigru-mfcc-demo",
        "corpus": {
            "name": "ravdess",
            "root": str(ravdess_root),
            "classes": sorted(CLASSES.values()),
            "speakers": ACTORS,
        },
        "overrides": {
            "options.n_trials": 5,
            "options.n_startup_trials": 3,
            "options.max_epochs": 6,
            "options.min_resource": 2,
            "options.reduction_factor": 2,
            "options.parallel_trials": 2,
        },
        "folds": {"n_folds": 4, "only": [0]},
        "device": "cpu",
    }
    search_id = server.submit(body)
    search = server.wait_for(search_id)
    assert search["status"] == "completed", (search["error"], server.output())
    assert search["strategy"] == "tpe-asha" and search["summary"]["ua_mean"] > 0.5

    trials = server.all_trials(search_id, limit=2)
    keys = [t["key"] for t in trials]
    assert len(keys) == len(set(keys)), f"duplicated trials: {keys}"
    searched = [t for t in trials if t["stage"] == "search"]
    assert len([t for t in searched if t["state"] in ("complete", "pruned")]) == 5
    assert any(t["state"] == "pruned" for t in searched), "successive halving pruned none"
    for trial in searched:
        assert server.steps(trial["id"]), f"trial {trial['key']} has no epochs"
    (retrain,) = [t for t in trials if t["stage"] == "retrain"]
    assert retrain["state"] == "complete"

    messages = event_messages(sessions, search_id)
    assert any("trials run as Ray tasks, 2 at a time" in m for m in messages), messages
    assert any("optuna-dashboard sqlite:///" in m for m in messages)

    bundle = tmp_path / "model.zip"
    response = httpx.get(f"{server.url}/searches/{search_id}/export", timeout=60)
    assert response.status_code == 200
    bundle.write_bytes(response.content)
    assert "genome.json" in zipfile.ZipFile(bundle).namelist()
    correct, n = held_out_accuracy(bundle, ravdess_root, UNSEEN_ACTORS)  # the final model never saw them
    assert correct / n >= 0.65, f"{correct}/{n} files of unseen actors right"
