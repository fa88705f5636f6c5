"""The aggregated routes the dashboard reads (api/routes/insights.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import random

import pytest

from api.routes.insights import ScoredTrial, pareto_front
from nas.genome import SEQ_COLLAPSE_FLAG
from nas.reporting import STEP_GENOME, TrialState
from nas.store import repository as repo
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    TOKEN,
    assert_error,
    client_fixture,
    field_locs,
    sessions_of,
    settings_fixture,
)
from tests.dashboard import darts_search, sampled_search


def _dominates(a: dict, b: dict) -> bool:
    return a["cost"] <= b["cost"] and a["score"] >= b["score"] and (a["cost"] < b["cost"] or a["score"] > b["score"])


def _stored_points(client, search: str, score: str, cost: str, state: str | None = "complete") -> list[dict]:
    """Every trial's (score, cost), of one state, read through the plain trials listing."""
    params = {"limit": 500} if state is None else {"state": state, "limit": 500}
    page = client.get(f"/searches/{search}/trials", params=params).json()
    return [
        {"trial_id": t["id"], "score": t["metrics"][score], "cost": t["metrics"][cost]}
        for t in page["items"]
        if score in (t["metrics"] or {}) and cost in t["metrics"]
    ]


@pytest.mark.parametrize("cost", ["params", "latency_ms_p50"])
def test_the_pareto_front_is_exactly_the_non_dominated_completed_trials(client, cost):
    search = sampled_search(sessions_of(client), 60)
    stored = _stored_points(client, search, "val_ua", cost)
    expected = {p["trial_id"] for p in stored if not any(_dominates(q, p) for q in stored)}

    answer = client.get(f"/searches/{search}/pareto", params={"cost": cost}).json()
    assert answer["considered"] == len(stored) == 48  # 12 of the 60 were pruned
    front = answer["front"]
    assert {p["trial_id"] for p in front} == expected and len(expected) >= 2
    assert [p["cost"] for p in front] == sorted(p["cost"] for p in front)
    assert all(a["score"] < b["score"] for a, b in itertools.pairwise(front))  # more cost buys more UA
    assert answer["others_total"] == len(stored) - len(expected) == len(answer["others"])

    sampled = client.get(f"/searches/{search}/pareto", params={"cost": cost, "limit": 5}).json()
    assert len(sampled["others"]) == 5 and sampled["others_total"] == answer["others_total"]
    assert sampled["front"] == front
    front_only = client.get(f"/searches/{search}/pareto", params={"cost": cost, "limit": 0}).json()
    assert (front_only["others"], front_only["others_total"], front_only["front"]) == (
        [],
        answer["others_total"],
        front,
    )


def test_pareto_keeps_equal_points_and_drops_ties_that_cost_more():
    def point(trial_id: int, score: float, cost: float) -> ScoredTrial:
        return ScoredTrial(trial_id=trial_id, key=str(trial_id), fold=0, stage="search", score=score, cost=cost)

    front, dominated = pareto_front(
        [point(1, 0.7, 10), point(2, 0.7, 10), point(3, 0.7, 12), point(4, 0.9, 12), point(5, 0.5, 5)]
    )
    assert [p.trial_id for p in front] == [5, 1, 2, 4]
    assert [p.trial_id for p in dominated] == [3]


def test_pareto_filters_and_errors(client):
    sessions = sessions_of(client)
    darts = darts_search(sessions)
    retrains = client.get(f"/searches/{darts}/pareto", params={"stage": "retrain", "score": "ua"}).json()
    assert retrains["considered"] == 2 and {p["stage"] for p in retrains["front"] + retrains["others"]} == {"retrain"}
    one_fold = client.get(f"/searches/{darts}/pareto", params={"fold": 1}).json()
    assert [p["key"] for p in one_fold["front"] + one_fold["others"]] == ["fold-1/retrain/emodarts"]

    error = assert_error(client.get(f"/searches/{darts}/pareto", params={"cost": "weight"}), 422, "validation_error")
    assert field_locs(error) == [["query", "cost"]] and "params" in error["message"]
    assert_error(client.get("/searches/nope/pareto"), 404, "not_found")


def test_history_steps_up_at_each_new_best(client):
    search = sampled_search(sessions_of(client), 40, seed=3)
    stored = sorted(_stored_points(client, search, "val_ua", "params"), key=lambda p: p["trial_id"])
    answer = client.get(f"/searches/{search}/history").json()
    assert answer["total"] == len(stored) == 32
    assert [p["trial_id"] for p in answer["points"]] == [p["trial_id"] for p in stored]
    assert [p["number"] for p in answer["points"]] == list(range(1, 33))
    running_best, improvements = -1.0, []
    for p in stored:
        if p["score"] > running_best:
            running_best = p["score"]
            improvements.append(p["trial_id"])
    assert [p["trial_id"] for p in answer["best"]] == improvements

    sampled = client.get(f"/searches/{search}/history", params={"limit": 8}).json()
    # Evenly spread over the 32, the first and the newest kept.
    assert [p["number"] for p in sampled["points"]] == [1, 5, 10, 14, 19, 23, 28, 32]
    assert sampled["best"] == answer["best"]  # the best-so-far line is never sampled away


def test_curves_hold_each_trials_epochs(client):
    sessions = sessions_of(client)
    search = sampled_search(sessions, 12)
    running = repo.start_trial(sessions, search, "fold-0/trial-running", {"units": 32}, 0, "search")
    repo.add_steps(sessions, running, [(1, {"val_ua": 0.5, "val_loss": float("nan")})])

    newest = client.get(f"/searches/{search}/curves", params={"limit": 4}).json()
    assert newest["total"] == 13 and newest["metrics"] == ["val_ua", "val_loss"]
    assert [c["trial_id"] for c in newest["trials"]][-1] == running  # oldest first, the running one last
    last = newest["trials"][-1]
    assert (last["state"], last["steps"], last["values"]) == ("running", [1], {"val_ua": [0.5], "val_loss": [None]})
    for curve in newest["trials"][:-1]:
        steps = client.get(f"/trials/{curve['trial_id']}").json()["steps"]
        assert curve["steps"] == [s["step"] for s in steps] == [1, 2, 3]
        assert curve["values"]["val_ua"] == [s["metrics"]["val_ua"] for s in steps]

    best = client.get(f"/searches/{search}/curves", params={"order": "best", "limit": 3, "metric": "val_wa"}).json()
    scored = _stored_points(client, search, "val_ua", "params", state=None)  # pruned ones have curves too
    top = sorted(scored, key=lambda p: -p["score"])[:3]
    assert sorted(c["trial_id"] for c in best["trials"]) == sorted(p["trial_id"] for p in top)
    assert set(best["trials"][0]["values"]) == {"val_wa"}
    pruned = client.get(f"/searches/{search}/curves", params={"state": "pruned"}).json()
    assert pruned["total"] == 2 and {c["state"] for c in pruned["trials"]} == {"pruned"}

    too_many = [("metric", f"m{i}") for i in range(9)]
    assert_error(client.get(f"/searches/{search}/curves", params=too_many), 422, "validation_error")


def test_overview_lists_each_folds_model_then_the_final_one(client):
    sessions = sessions_of(client)
    search = darts_search(sessions, folds=2)
    folds = client.get(f"/searches/{search}/overview").json()
    assert folds["optuna_storage"] is None
    assert [(f["fold"], f["stage"]) for f in folds["folds"]] == [(0, "retrain"), (1, "retrain"), (None, "final")]
    for row in folds["folds"][:2]:
        trial = client.get(f"/trials/{row['trial_id']}").json()
        assert row["test"] == {k: trial["metrics"][k] for k in ("ua", "wa", "macro_f1")}
        assert row["validation"]["val_ua"] == trial["metrics"]["val_ua"]
        assert (row["params"], row["latency_ms"]) == (trial["n_params"], trial["metrics"]["latency_ms_p50"])
        assert row["test_speakers"] == trial["metrics"]["test_speakers"]
    assert folds["folds"][2]["test"] == {} and folds["folds"][2]["test_speakers"] == []


def test_overview_names_the_optuna_storage_a_search_keeps(client, settings):
    sessions = sessions_of(client)
    search = sampled_search(sessions, 1)
    folder = settings.results_dir / search
    folder.mkdir(parents=True)
    (folder / "optuna.db").write_bytes(b"")
    assert client.get(f"/searches/{search}/overview").json()["optuna_storage"] == f"sqlite:///{folder / 'optuna.db'}"


def test_genomes_in_trial_order_with_the_cells_each_search_epoch_derived(client):
    sessions = sessions_of(client)
    search = darts_search(sessions, folds=2, epochs=4)
    answer = client.get(f"/searches/{search}/genomes").json()
    shown = [(g["key"], g["epoch"]) for g in answer["genomes"]]
    assert shown == [  # per fold the supernet's cells at each epoch, its derived and its retrained genome; the final
        *[("fold-0/search", epoch) for epoch in (1, 2, 3, 4, None)],
        ("fold-0/retrain/emodarts", None),
        *[("fold-1/search", epoch) for epoch in (1, 2, 3, 4, None)],
        ("fold-1/retrain/emodarts", None),
        ("final/retrain/emodarts", None),
    ]
    assert {g["family"] for g in answer["genomes"]} == {"emodarts"}
    fold_0 = answer["genomes"][:5]
    assert [g["flags"] for g in fold_0] == [[SEQ_COLLAPSE_FLAG]] * 3 + [[], []]  # collapsed, until the last epoch
    assert fold_0[3]["genome"]["architecture"] == fold_0[4]["genome"]["architecture"]  # the last epoch's cells
    assert fold_0[0]["genome"]["architecture"]["seq"] != fold_0[4]["genome"]["architecture"]["seq"]

    newest = client.get(f"/searches/{search}/genomes", params={"limit": 2}).json()
    assert [g["key"] for g in newest["genomes"]] == ["fold-1/retrain/emodarts", "final/retrain/emodarts"]
    only_search = client.get(f"/searches/{search}/genomes", params={"stage": "search", "fold": 1, "epochs": 2})
    assert [(g["key"], g["epoch"]) for g in only_search.json()["genomes"]] == [
        ("fold-1/search", 1),  # two epochs, evenly spread: the first and the last
        ("fold-1/search", 4),
        ("fold-1/search", None),
    ]
    stored_only = client.get(f"/searches/{search}/genomes", params={"epochs": 0}).json()
    assert [g["epoch"] for g in stored_only["genomes"]] == [None] * 5


def test_a_running_supernet_shows_the_cells_of_its_epochs_so_far(client):
    sessions = sessions_of(client)
    search = darts_search(sessions, folds=1, epochs=3, finish=False)
    running = repo.start_trial(sessions, search, "fold-1/search", {}, fold=1, stage="search")
    step = client.get(f"/trials/{repo.list_trials(sessions, search, stage='search').items[0].id}").json()["steps"][0]
    repo.add_steps(sessions, running, [(1, step["metrics"])])
    answer = client.get(f"/searches/{search}/genomes", params={"fold": 1}).json()
    assert [(g["trial_id"], g["epoch"]) for g in answer["genomes"]] == [(running, 1)]
    assert answer["genomes"][0]["genome"] == step["metrics"][STEP_GENOME]


def test_best_scores_of_many_searches_in_one_call(client):
    sessions = sessions_of(client)
    darts, sampled = darts_search(sessions), sampled_search(sessions, 10)
    empty = sampled_search(sessions, 0, name="nothing yet")
    pruned_best = repo.start_trial(sessions, sampled, "fold-0/pruned", {}, 0, "search")
    repo.finish_trial(sessions, pruned_best, TrialState.PRUNED, {"val_ua": 0.99})  # pruned: not a result

    answer = client.get("/best-scores", params=[("search_id", s) for s in (darts, sampled, empty)]).json()
    stored = _stored_points(client, sampled, "val_ua", "params")
    darts_best = max(f["validation"]["val_ua"] for f in client.get(f"/searches/{darts}/overview").json()["folds"])
    assert answer == {
        "score": "val_ua",
        "best": {darts: pytest.approx(darts_best), sampled: max(p["score"] for p in stored), empty: None},
    }
    assert_error(client.get("/best-scores"), 422, "validation_error")
    assert_error(client.get("/best-scores", params={"search_id": "a/b"}), 422, "validation_error")


def test_dashboard_info_says_whether_writes_need_a_token(client, settings):
    assert client.get("/dashboard/info").json() == {"writes_need_token": False, "ray_dashboard": None}


def test_dashboard_info_with_a_token_and_a_ray_cluster(db_url, tmp_path, ravdess_root):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.api import api_settings

    settings = api_settings(db_url, tmp_path, ravdess_root, api_token=TOKEN, ray_address="ray://head.local:10001")
    with TestClient(create_app(settings)) as client:
        info = client.get("/dashboard/info").json()
    assert info == {"writes_need_token": True, "ray_dashboard": "http://head.local:8265"}


def test_the_page_and_its_assets_are_served_with_a_policy_that_allows_only_this_server(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/dashboard/assets/vendor/echarts.min.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == page.headers["content-security-policy"]
    assert_error(client.get("/dashboard/assets/nothing.js"), 404, "not_found")


def test_a_random_cloud_has_a_front_that_no_point_beats():
    rng = random.Random(5)
    points = [
        ScoredTrial(trial_id=i, key=str(i), fold=0, stage=None, score=rng.random(), cost=rng.randint(1, 50))
        for i in range(500)
    ]
    front, dominated = pareto_front(points)
    as_dicts = [p.model_dump() for p in points]
    for p in front:
        assert not any(_dominates(q, p.model_dump()) for q in as_dicts)
    for p in dominated:
        assert any(_dominates(q.model_dump(), p.model_dump()) for q in front)
