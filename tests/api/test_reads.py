"""Reading and controlling searches, the trials listing, the catalog, health and OpenAPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from nas.reporting import TrialState
from nas.spec import CorpusSpec, spec_from_preset
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    assert_error,
    client_fixture,
    field_locs,
    search_body,
    sessions_of,
    settings_fixture,
)


def queue_search(sessions: sessionmaker[Session], name: str = "s", root: Path = Path("/data/ravdess")) -> str:
    spec = spec_from_preset("emodarts-demo", CorpusSpec(name="ravdess", root=root))
    return repo.create_search(sessions, spec.model_dump(mode="json"), name, "darts").id


def add_trials(sessions: sessionmaker[Session], search_id: str, n: int) -> list[int]:
    """`n` trials: every third still running (no UA), the rest complete with UA 0.3 + 0.01 * i."""
    ids = []
    for i in range(n):
        stage = "search" if i % 2 else "retrain"
        trial = repo.start_trial(sessions, search_id, f"t{i}", {"i": i}, fold=i % 3, stage=stage)
        if i % 3:
            metrics = {"ua": 0.3 + 0.01 * i, "wa": 0.5 - 0.01 * i, "params": 1000 + i}
            repo.finish_trial(sessions, trial, TrialState.COMPLETE, metrics, genome={"kind": "x"})
        ids.append(trial)
    return ids


def test_list_get_and_paging(client):
    sessions = sessions_of(client)
    ids = [queue_search(sessions, f"s{i}") for i in range(5)]
    repo.request_cancel(sessions, ids[0])

    everything = client.get("/searches").json()
    assert everything["total"] == 5 and [s["id"] for s in everything["items"]] == ids[::-1]  # newest first
    page = client.get("/searches", params={"limit": 2, "offset": 2}).json()
    assert [s["id"] for s in page["items"]] == ids[2::-1][:2] and page["total"] == 5
    cancelled = client.get("/searches", params={"status": "cancelled"}).json()
    assert [s["id"] for s in cancelled["items"]] == [ids[0]] and cancelled["total"] == 1

    bad_status = assert_error(client.get("/searches", params={"status": "sleeping"}), 422)
    assert ["query", "status"] in field_locs(bad_status) and "queued" in bad_status["message"]
    assert_error(client.get("/searches", params={"limit": 0}), 422)
    assert_error(client.get("/searches", params={"limit": "x"}), 422)

    one = client.get(f"/searches/{ids[1]}").json()
    assert (one["id"], one["name"], one["status"]) == (ids[1], "s1", "queued")
    assert "nope" in assert_error(client.get("/searches/nope"), 404, "not_found")["message"]


def test_cancel_and_resume(client):
    sessions = sessions_of(client)
    queued, running, completed = (queue_search(sessions, n) for n in ("q", "r", "c"))
    assert repo.claim_next_search(sessions, "w", 30).id == queued
    repo.mark_finished(sessions, queued, SearchStatus.COMPLETED)
    assert repo.claim_next_search(sessions, "w", 30).id == running

    flagged = client.post(f"/searches/{running}/cancel")
    assert flagged.status_code == 200 and flagged.json()["cancel_requested"] is True
    assert flagged.json()["status"] == "running"  # its runner stops within a lease renewal

    now = client.post(f"/searches/{completed}/cancel").json()
    assert now["status"] == "cancelled"
    assert client.post(f"/searches/{completed}/cancel").status_code == 200  # idempotent
    resumed = client.post(f"/searches/{completed}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"

    assert_error(client.post(f"/searches/{queued}/cancel"), 409, "invalid_transition")
    assert "completed" in assert_error(client.post(f"/searches/{queued}/resume"), 409)["message"]
    assert_error(client.post("/searches/nope/cancel"), 404)
    assert_error(client.post("/searches/nope/resume"), 404)
    assert_error(client.get(f"/searches/{queued}/cancel"), 405, "method_not_allowed")


def test_trials_paging_sorting_and_filters(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)
    other = queue_search(sessions, "other")
    ids = add_trials(sessions, search, 30)
    add_trials(sessions, other, 3)

    seen: list[dict[str, Any]] = []
    url: str | None = f"/searches/{search}/trials?sort=-ua&limit=7"
    while url:
        page = client.get(url).json()
        assert page["total"] == 30 and len(page["items"]) <= 7
        seen += page["items"]
        url = page["links"].get("next")
    assert sorted(t["id"] for t in seen) == ids  # every trial once
    uas = [t["ua"] for t in seen]
    scored = [u for u in uas if u is not None]
    assert scored == sorted(scored, reverse=True) and uas[len(scored) :] == [None] * (30 - len(scored))

    by_params = client.get(f"/searches/{search}/trials", params={"sort": "n_params", "limit": 100}).json()
    params = [t["n_params"] for t in by_params["items"] if t["n_params"] is not None]
    assert params == sorted(params)

    good = client.get(f"/searches/{search}/trials", params={"state": "complete", "min_ua": 0.5}).json()
    assert good["total"] == len(good["items"]) > 0
    assert all(t["state"] == "complete" and t["ua"] >= 0.5 for t in good["items"])
    stage = client.get(f"/searches/{search}/trials", params={"stage": "search", "limit": 100}).json()
    assert stage["total"] == 15 and {t["stage"] for t in stage["items"]} == {"search"}
    running = client.get(f"/searches/{search}/trials", params={"state": "running"}).json()
    assert running["total"] == 10 and all(t["links"].keys() == {"self", "search"} for t in running["items"])

    bad_sort = assert_error(client.get(f"/searches/{search}/trials", params={"sort": "speed"}), 400)
    assert bad_sort["type"] == "unknown_name" and "-ua" in bad_sort["valid"] and "-ua" in bad_sort["message"]
    first = client.get(f"/searches/{search}/trials", params={"sort": "ua", "limit": 2}).json()
    wrong_cursor = client.get(f"/searches/{search}/trials", params={"sort": "wa", "cursor": first["next_cursor"]})
    assert ["query", "cursor"] in field_locs(assert_error(wrong_cursor, 400))
    garbage = client.get(f"/searches/{search}/trials", params={"cursor": "!!not-a-cursor"})
    assert_error(garbage, 400)
    assert_error(client.get(f"/searches/{search}/trials", params={"state": "asleep"}), 422)
    assert_error(client.get(f"/searches/{search}/trials", params={"min_ua": "high"}), 422)
    assert_error(client.get("/searches/nope/trials"), 404)


def test_trials_of_one_fold_page_by_f1_and_latency(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)
    stored = {}  # trial id -> (fold, macro_f1, latency) as finished
    for i in range(24):
        trial = repo.start_trial(sessions, search, f"t{i}", {}, fold=i % 2, stage="retrain")
        f1 = None if i % 5 == 0 else round(0.2 + 0.05 * (i % 7), 2)  # ties, and trials without an F1
        latency = None if i % 4 == 0 else 1.0 + (i % 6) / 4
        metrics = {"ua": 0.5} | ({} if f1 is None else {"macro_f1": f1})
        metrics |= {} if latency is None else {"latency_ms_p50": latency}
        repo.finish_trial(sessions, trial, TrialState.COMPLETE, metrics)
        stored[trial] = (i % 2, f1, latency)

    def every_page(sort: str, fold: int) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        url: str | None = f"/searches/{search}/trials?sort={sort}&fold={fold}&limit=5"
        while url:
            page = client.get(url).json()
            assert page["total"] == 12
            seen += page["items"]
            url = page["links"].get("next")
        return seen

    def expected(fold: int, column: int, descending: bool) -> list[int]:
        ids = [t for t, v in stored.items() if v[0] == fold]
        valued = sorted((t for t in ids if stored[t][column] is not None), key=lambda t: (stored[t][column], t))
        missing = sorted(t for t in ids if stored[t][column] is None)
        return valued[::-1] + missing[::-1] if descending else valued + missing

    by_f1 = every_page("-macro_f1", 1)
    assert [t["id"] for t in by_f1] == expected(1, 1, descending=True)
    assert [t["macro_f1"] for t in by_f1] == [stored[t["id"]][1] for t in by_f1]
    by_latency = every_page("latency_ms", 0)
    assert [t["id"] for t in by_latency] == expected(0, 2, descending=False)
    assert {t["fold"] for t in by_latency} == {0}
    assert [t["latency_ms"] for t in by_latency] == [t["metrics"].get("latency_ms_p50") for t in by_latency]
    assert_error(client.get(f"/searches/{search}/trials", params={"fold": -1}), 422)


def test_trial_detail_and_best(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)
    assert_error(client.get(f"/searches/{search}/best"), 409, "no_result")
    ids = add_trials(sessions, search, 6)
    repo.add_steps(sessions, ids[1], [(1, {"loss": 2.0}), (2, {"loss": 1.5}), (1, {"loss": 1.9})])

    detail = client.get(f"/trials/{ids[1]}").json()
    assert [s["step"] for s in detail["steps"]] == [1, 2] and detail["steps"][0]["metrics"] == {"loss": 1.9}
    assert detail["genome"] == {"kind": "x"} and detail["state"] == "complete" and detail["n_params"] == 1001
    assert "export" not in detail["links"]  # a search-stage trial keeps no weights
    assert client.get(f"/trials/{ids[2]}").json()["links"]["export"] == f"/trials/{ids[2]}/export"  # a retrain

    assert_error(client.get(f"/searches/{search}/best"), 409, "no_result")  # only a test UA: nothing chose
    assert assert_error(client.get(f"/searches/{search}/best", params={"metric": "f1"}), 400)["valid"]

    assert_error(client.get("/trials/999999"), 404, "not_found")
    assert ["path", "trial_id"] in field_locs(assert_error(client.get("/trials/abc"), 422))
    assert_error(client.get("/searches/nope/best"), 404)


def test_best_is_the_model_chosen_on_validation_never_on_test_speakers(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)

    def trial(key: str, stage: str, **metrics: float) -> int:
        trial_id = repo.start_trial(sessions, search, key, {}, fold=0, stage=stage)
        repo.finish_trial(sessions, trial_id, TrialState.COMPLETE, metrics, genome={"kind": "x"})
        return trial_id

    trial("candidate", "search", val_ua=0.9, val_wa=0.9)  # keeps no weights: nothing to export
    best_on_test = trial("fold-0/retrain", "retrain", ua=0.7, wa=0.7, val_ua=0.4, val_wa=0.6)
    best_on_validation = trial("fold-1/retrain", "retrain", ua=0.5, wa=0.5, val_ua=0.6, val_wa=0.5)
    assert client.get(f"/searches/{search}/best").json()["id"] == best_on_validation
    assert client.get(f"/searches/{search}/best", params={"metric": "wa"}).json()["id"] == best_on_test

    final = trial("final/retrain", "final", val_ua=0.55, val_wa=0.55)  # trained on every speaker
    assert [client.get(f"/searches/{search}/best", params={"metric": m}).json()["id"] for m in ("ua", "wa")] == [
        final,
        final,
    ]


def test_search_spaces_serve_every_preset_with_its_schema(client):
    from search_spaces.presets import PRESETS

    catalog = client.get("/search-spaces").json()
    strategies = {s["name"]: s for s in catalog["strategies"]}
    assert list(strategies) == ["darts", "tpe-asha", "hyperband", "genetic-ensemble"]
    presets = [p for s in catalog["strategies"] for p in s["presets"]]
    assert sorted(p["name"] for p in presets) == sorted(PRESETS)
    for strategy in catalog["strategies"]:
        assert strategy["description"] and {p["strategy"] for p in strategy["presets"]} == {strategy["name"]}
        # The schema of a complete spec: what `spec` submissions of this strategy validate against.
        fields = strategy["json_schema"]["properties"].keys()
        reads_audio = strategy["name"] != "genetic-ensemble"  # an ensemble's members read their own features
        assert {"corpus", "space", "options", "folds", "seed"} | ({"features"} if reads_audio else set()) <= fields
    assert strategies["darts"]["presets"][0]["name"] == "emodarts"  # the default comes first

    demo = next(p for p in strategies["darts"]["presets"] if p["name"] == "emodarts-demo")
    assert demo["strategy"] == "darts" and demo["description"]
    assert demo["defaults"]["space"]["nodes"] == 2 and demo["defaults"]["options"]["second_order"] is False
    assert {"nodes", "cnn_ops", "seq_ops"} <= demo["json_schema"]["space"]["properties"].keys()
    assert "search_epochs" in demo["json_schema"]["options"]["properties"]
    assert "frontends" in demo["json_schema"]["features"]["properties"]

    bigru = next(p for p in strategies["tpe-asha"]["presets"] if p["name"] == "bigru-mfcc-demo")
    assert bigru["defaults"]["space"]["family"] == "bigru-head" and bigru["defaults"]["features"]["layout"] == "frames"
    assert {"n_trials", "min_resource", "reduction_factor"} <= bigru["json_schema"]["options"]["properties"].keys()
    assert "params" in bigru["json_schema"]["space"]["properties"]

    families = next(p for p in strategies["hyperband"]["presets"] if p["name"] == "cnn-families-demo")
    assert families["defaults"]["space"]["families"] == ["cnn2d-lstm", "cnn1d-lstm", "cnn-lstm-fused", "lstm-cnn"]
    assert {"scheduler", "sampler", "max_epochs", "reduction_factor"} <= families["json_schema"]["options"][
        "properties"
    ].keys()

    (ensemble,) = strategies["genetic-ensemble"]["presets"]
    assert ensemble["defaults"]["features"] is None and ensemble["defaults"]["options"]["restarts"] == 5
    assert {"searches", "trials", "top_k"} <= ensemble["json_schema"]["space"]["properties"].keys()


def test_datasets_list_readers_and_root_contents(client, ravdess_root, tmp_path):
    (tmp_path / "roots" / "my-corpus").mkdir()
    (tmp_path / "roots" / "list.csv").write_text("path,label,speaker\n")
    catalog = client.get("/datasets").json()
    names = [c["name"] for c in catalog["corpora"]]
    assert {"ravdess", "iemocap", "csv"} <= set(names)
    ravdess = next(c for c in catalog["corpora"] if c["name"] == "ravdess")
    assert "Actor" in ravdess["layout"] and ravdess["root_is_file"] is False
    assert next(c for c in catalog["corpora"] if c["name"] == "csv")["root_is_file"] is True
    roots = {r["path"]: r for r in catalog["data_roots"]}
    assert ravdess_root.name in roots[str(ravdess_root.parent)]["folders"]
    assert roots[str(tmp_path / "roots")]["folders"] == ["my-corpus"]
    assert roots[str(tmp_path / "roots")]["manifests"] == ["list.csv"]


def test_health_docs_and_unknown_routes(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["database"] is True
    assert health.json()["version"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/searches",
        "/searches/{search_id}/trials",
        "/trials/{trial_id}/export",
        "/search-spaces",
    } <= set(paths)
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_health_reports_a_dead_database(client, monkeypatch, tmp_path):
    from sqlalchemy import create_engine

    unreachable = create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}")
    monkeypatch.setattr(client.app.state, "sessions", sessionmaker(unreachable))
    health = client.get("/health")
    assert health.status_code == 503
    assert (health.json()["status"], health.json()["database"]) == ("degraded", False)


def test_unexpected_errors_are_json_500s(client, monkeypatch):
    from fastapi.testclient import TestClient

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(repo, "list_searches", explode)
    quiet = TestClient(client.app, raise_server_exceptions=False)
    error = assert_error(quiet.get("/searches"), 500, "internal_error")
    assert "boom" not in error["message"]  # internals stay in the server log


def test_links_offer_only_what_the_status_allows_and_a_stopped_search_leaves_no_trial_running(client):
    sessions = sessions_of(client)
    search = queue_search(sessions)
    links = client.get(f"/searches/{search}").json()["links"]
    assert "cancel" in links and "resume" not in links and "export" not in links
    assert repo.claim_next_search(sessions, "w", 30).id == search
    searching = repo.start_trial(sessions, search, "fold-0/search", {}, fold=0, stage="search")
    repo.request_cancel(sessions, search)
    assert repo.mark_finished(sessions, search, SearchStatus.CANCELLED, owner="w")
    trial = client.get(f"/trials/{searching}").json()
    assert trial["state"] == "failed" and trial["finished_at"] is not None  # interrupted, not left running
    links = client.get(f"/searches/{search}").json()["links"]
    assert "resume" in links and "cancel" not in links and "export" not in links

    done = queue_search(sessions, "done")
    assert repo.claim_next_search(sessions, "w", 30).id == done
    assert repo.mark_finished(sessions, done, SearchStatus.COMPLETED, owner="w")
    assert set(client.get(f"/searches/{done}").json()["links"]) == {"self", "trials", "best", "events", "export"}
    assert client.post(links["resume"]).status_code == 200
