"""genetic-ensemble through the service: two real tiny searches (tpe-asha and hyperband, fold 0 of 4) submitted
over REST, then an ensemble of their fold models submitted and watched like any search; each GA restart is
a trial whose steps are generations, and the exported ensemble bundle predicts held-out actors."""

from __future__ import annotations

import json
import zipfile

import httpx
import pytest

from tests.e2e import ACTORS, CLASSES
from tests.strategies.conftest import TINY, held_out_accuracy

pytestmark = pytest.mark.slow


def _body(strategy: str, ravdess_root, **fields) -> dict:
    return {
        "name": f"{strategy}-e2e",
        "strategy": strategy,
        "corpus": {
            "name": "ravdess",
            "root": str(ravdess_root),
            "classes": sorted(CLASSES.values()),
            "speakers": ACTORS,
        },
        "folds": {"n_folds": 4, "only": [0]},
        "device": "cpu",
        **fields,
    }


def test_an_ensemble_of_two_strategies_searched_over_rest(server, ravdess_root, tmp_path):
    server.start()
    members = [
        server.submit(_body(strategy, ravdess_root, preset=TINY[strategy][0], overrides=TINY[strategy][1]))
        for strategy in ("tpe-asha", "hyperband")
    ]
    for search_id in members:
        search = server.wait_for(search_id)
        assert search["status"] == "completed", (search["error"], server.output())

    options = {"options.generations": 10, "options.population": 12, "options.restarts": 2}
    ensemble_id = server.submit(
        _body(
            "genetic-ensemble",
            ravdess_root,
            preset="genetic-ensemble",
            overrides={"space.searches": members, **options},
        )
    )
    search = server.wait_for(ensemble_id)
    assert search["status"] == "completed", (search["error"], server.output())
    summary = search["summary"]
    assert {"ua_mean", "uniform_ua_mean", "best_single_ua_mean"} <= summary.keys()

    trials = {t["key"]: t for t in server.all_trials(ensemble_id, limit=5)}
    assert set(trials) == {"fold-0/restart-0", "fold-0/restart-1", "fold-0/ensemble"}
    assert server.steps(trials["fold-0/restart-1"]["id"]) == list(range(1, 11)), "one step per generation"
    final = trials["fold-0/ensemble"]
    assert final["state"] == "complete" and final["stage"] == "ensemble"
    assert {m["name"].split(" ")[3].rstrip(",") for m in final["metrics"]["members"]} == {m[:8] for m in members}

    response = httpx.get(f"{server.url}/searches/{ensemble_id}/export", timeout=60)
    assert response.status_code == 200
    bundle = tmp_path / "ensemble.zip"
    bundle.write_bytes(response.content)
    genome = json.loads(zipfile.ZipFile(bundle).read("genome.json"))
    assert genome["kind"] == "ensemble" and len(genome["members"]) == 2
    correct, n = held_out_accuracy(bundle, ravdess_root, set(final["metrics"]["test_speakers"]))
    assert correct / n >= 0.65, f"{correct}/{n} held-out files right"
