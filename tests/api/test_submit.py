"""POST /searches: a valid submission is queued once; every bad input is a clear 4xx naming the field."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from api.main import create_app
from nas.spec import CorpusSpec, parse_spec, spec_from_preset
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    TOKEN,
    api_settings,
    assert_error,
    client_fixture,
    field_locs,
    search_body,
    sessions_of,
    settings_fixture,
)


def test_submission_is_queued_with_the_resolved_spec(client, ravdess_root):
    response = client.post("/searches", json=search_body(ravdess_root, name="first", seed=3, threads=2))
    assert response.status_code == 201, response.text
    search = response.json()
    assert response.headers["location"] == f"/searches/{search['id']}"
    assert (search["status"], search["strategy"], search["preset"]) == ("queued", "darts", "emodarts-demo")
    assert search["spec"]["seed"] == 3 and search["spec"]["folds"]["only"] == [0] and search["spec"]["threads"] == 2
    assert search["spec"]["corpus"]["root"] == str(ravdess_root.resolve())
    assert search["links"]["trials"] == f"/searches/{search['id']}/trials"

    stored = repo.get_search(sessions_of(client), search["id"])
    assert stored.status == SearchStatus.QUEUED and stored.name == "first"
    assert parse_spec(stored.spec).model_dump(mode="json") == stored.spec  # the worker rebuilds exactly this spec


def test_relative_root_is_looked_up_under_the_data_roots(client, ravdess_root):
    response = client.post("/searches", json=search_body(ravdess_root.parent / "x" / ".." / ravdess_root.name))
    assert response.status_code == 201, response.text
    relative = client.post("/searches", json=search_body(Path(ravdess_root.name)))
    assert relative.status_code == 201, relative.text
    assert relative.json()["spec"]["corpus"]["root"] == str(ravdess_root.resolve())


def test_overrides_and_a_full_spec(client, ravdess_root):
    overridden = client.post(
        "/searches", json=search_body(ravdess_root, overrides={"space.nodes": 1, "options.search_epochs": 2})
    )
    assert overridden.status_code == 201, overridden.text
    assert overridden.json()["spec"]["space"]["nodes"] == 1
    assert overridden.json()["spec"]["options"]["search_epochs"] == 2

    corpus = CorpusSpec(name="ravdess", root=ravdess_root, classes=("neutral", "happy", "sad"))
    overrides = {"space.nodes": 1, "options.search_epochs": 2}
    spec = spec_from_preset("emodarts-demo", corpus, overrides, seed=7)
    whole = client.post("/searches", json={"name": "whole", "spec": spec.model_dump(mode="json")})
    assert whole.status_code == 201, whole.text
    assert whole.json()["spec"]["seed"] == 7 and whole.json()["preset"] == "emodarts-demo"

    both = client.post("/searches", json={"name": "both", "preset": "emodarts", "spec": spec.model_dump(mode="json")})
    assert "preset" in assert_error(both, 422, "validation_error")["message"]


def test_idempotent_retries(client, ravdess_root):
    body = search_body(ravdess_root, idempotency_key="retry-1")
    first = client.post("/searches", json=body)
    assert first.status_code == 201
    again = client.post("/searches", json=body)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]

    # The header works the same, and names the same key space.
    header = {"Idempotency-Key": "retry-1"}
    by_header = client.post("/searches", json=search_body(ravdess_root), headers=header)
    assert by_header.status_code == 200 and by_header.json()["id"] == first.json()["id"]

    changed = client.post("/searches", json=search_body(ravdess_root, name="other"), headers=header)
    assert "retry-1" in assert_error(changed, 409, "idempotency_conflict")["message"]

    mismatch = client.post("/searches", json=body, headers={"Idempotency-Key": "retry-2"})
    assert ["header", "idempotency-key"] in field_locs(assert_error(mismatch, 422))
    assert repo.list_searches(sessions_of(client)).total == 1


@pytest.mark.parametrize(
    ("change", "loc", "says"),
    [
        ({"name": ""}, ["body", "name"], "at least 1"),
        ({"name": "x" * 201}, ["body", "name"], "at most 200"),
        ({"seed": "abc"}, ["body", "seed"], "integer"),
        ({"seed": -1}, ["body", "seed"], "greater than or equal"),
        ({"gpus": "many"}, ["body", "gpus"], "number"),
        ({"threads": 0}, ["body", "threads"], "greater than or equal"),
        ({"device": "tpu"}, ["body", "device"], "'auto'"),
        ({"folds": {"n_folds": 1}}, ["body", "folds", "n_folds"], "greater than or equal"),
        ({"corpus": {"name": "ravdess"}}, ["body", "corpus", "root"], "required"),
        ({"corpus": None}, ["body"], "corpus"),
        ({"colour": "red"}, ["body", "colour"], "not permitted"),
        ({"overrides": {"space.nodes": "many"}}, ["body", "overrides", "space.nodes"], "integer"),
        ({"overrides": {"space.nodes": 99}}, ["body", "overrides", "space.nodes"], "less than or equal"),
        ({"overrides": {"space.cnn_ops": ["warp"]}}, ["body", "overrides", "space.cnn_ops"], "max_pool_3x3"),
        ({"overrides": {"nodes": 2}}, ["body", "overrides", "nodes"], "space.<field>"),
        ({"overrides": {"space.nodes.x": 2}}, ["body", "overrides", "space.nodes.x"], "single value"),
        ({"overrides": {"features.frontends.0": 2}}, ["body", "overrides", "features.frontends.0"], "whole"),
        (
            {"overrides": {"features.frontends": [{"kind": "mfcc", "n_mfcc": 0}]}},
            ["body", "overrides", "features.frontends"],
            "greater",
        ),
    ],
)
def test_invalid_fields_are_named(client, ravdess_root, change, loc, says):
    error = assert_error(client.post("/searches", json=search_body(ravdess_root, **change)), 422)
    assert loc in field_locs(error), error
    assert says in error["message"], error


def test_unknown_names_list_the_valid_ones(client, ravdess_root):
    preset = assert_error(client.post("/searches", json=search_body(ravdess_root, preset="dartz")), 422)
    assert preset["type"] == "unknown_name" and "emodarts-demo" in preset["valid"]
    assert "emodarts-demo" in preset["message"] and ["body", "preset"] in field_locs(preset)

    strategy = assert_error(client.post("/searches", json=search_body(ravdess_root, strategy="random")), 422)
    assert strategy["valid"] == ["darts", "genetic-ensemble", "hyperband", "tpe-asha"]
    assert "darts" in strategy["message"]

    mismatch = assert_error(client.post("/searches", json=search_body(ravdess_root, strategy="tpe-asha")), 422)
    assert mismatch["type"] == "invalid_config" and "bigru-mfcc-demo" in mismatch["valid"]
    assert ["body", "strategy"] in field_locs(mismatch)

    body = search_body(ravdess_root)
    body["corpus"]["name"] = "ravdes"
    corpus = assert_error(client.post("/searches", json=body), 422, "unknown_name")
    assert "ravdess" in corpus["valid"] and ["body", "corpus", "name"] in field_locs(corpus)


def test_corpus_problems_say_what_to_fix(client, ravdess_root, tmp_path):
    body = search_body(ravdess_root)
    body["corpus"]["classes"] = ["neutral", "bored"]
    unknown_class = assert_error(client.post("/searches", json=body), 422, "invalid_data")
    assert "bored" in unknown_class["message"] and "happy" in unknown_class["message"]

    missing = assert_error(client.post("/searches", json=search_body(tmp_path / "roots" / "nothing-here")), 422)
    assert missing["type"] == "invalid_data" and "does not exist" in missing["message"]

    one_class = search_body(ravdess_root)
    one_class["corpus"]["classes"] = ["neutral"]
    assert_error(client.post("/searches", json=one_class), 422, "invalid_data")


def test_paths_outside_the_data_roots_are_forbidden(client, ravdess_root, tmp_path):
    outside = tmp_path / "outside"
    (outside / "Actor_01").mkdir(parents=True)
    inside = tmp_path / "roots"
    os.symlink(outside, inside / "escape")  # a link inside a data root that leads out of it
    os.symlink(ravdess_root, inside / "alias")  # a link to another data root is fine

    for root in ["/etc", str(outside), f"{ravdess_root}/../../..", "../../../etc", str(inside / "escape")]:
        error = assert_error(client.post("/searches", json=search_body(Path(root))), 403, "forbidden_path")
        assert ["body", "corpus", "root"] in field_locs(error)
        assert str(ravdess_root.parent) in error["message"]  # names the allowed roots
    alias = client.post("/searches", json=search_body(inside / "alias"))
    assert alias.status_code == 201, alias.text

    # A manifest inside a data root whose rows point outside it.
    wavs = sorted(ravdess_root.glob("Actor_0[12]/*.flac"))[:45]
    (outside / "a.wav").write_bytes(b"RIFF")
    rows = [f"{wav},{('neutral', 'happy', 'sad')[i % 3]},s{i % 6}" for i, wav in enumerate(wavs)]  # 6 folds
    rows.append(f"{outside / 'a.wav'},neutral,s1")
    manifest = inside / "list.csv"
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    body = search_body(ravdess_root)
    body["corpus"] = {**body["corpus"], "name": "csv", "root": str(manifest)}
    manifest.write_text("path,label,speaker\n" + "\n".join(rows[:-1]) + "\n")
    accepted = client.post("/searches", json=body)
    assert accepted.status_code == 201, accepted.text  # the same without the outsider
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    body = search_body(ravdess_root)
    body["corpus"] = {**body["corpus"], "name": "csv", "root": str(manifest)}
    assert "outside" in assert_error(client.post("/searches", json=body), 403, "forbidden_path")["message"]
    # The same through a symlinked file that lives inside the data root.
    os.symlink(outside / "a.wav", inside / "link.wav")
    rows[-1] = f"{inside / 'link.wav'},neutral,s1"
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    assert_error(client.post("/searches", json=body), 403, "forbidden_path")


def test_a_search_above_its_own_memory_limit_is_refused_at_submission(client, ravdess_root):
    # The estimate is counted from the search's shape (microseconds), so the limit the search sets itself is
    # checked here; the memory of the device that runs it is checked against the cluster's nodes (see
    # tests/workers/test_cluster_resources.py) and by the worker against its own GPU or memory.
    body = search_body(ravdess_root, overrides={"options.memory_limit_gb": 0.01})
    error = assert_error(client.post("/searches", json=body), 422, "invalid_config")
    assert field_locs(error) == [["body", "overrides", "options.memory_limit_gb"]]
    assert "this search needs about 0.2 GB but only 0.0 GB is allowed" in error["message"]
    body = search_body(ravdess_root, overrides={"options.memory_limit_gb": 1})
    assert client.post("/searches", json=body).status_code == 201


def test_folds_need_as_many_speakers_as_there_are_folds(client, ravdess_root):
    speakers = len(list(ravdess_root.glob("Actor_*")))
    too_many = search_body(ravdess_root, folds={"n_folds": speakers + 1})
    error = assert_error(client.post("/searches", json=too_many), 422)
    assert error["type"] == "invalid_config" and ["body", "folds", "n_folds"] in field_locs(error)
    assert f"folds.n_folds {speakers + 1}" in error["message"] and f"has {speakers}" in error["message"]
    one_speaker_short = search_body(ravdess_root, folds={"n_folds": 6})
    one_speaker_short["corpus"]["speakers"] = [f"Actor_{i:02d}" for i in range(1, 6)]
    assert ["body", "folds", "n_folds"] in field_locs(
        assert_error(client.post("/searches", json=one_speaker_short), 422)
    )
    enough = search_body(ravdess_root, folds={"n_folds": speakers})
    assert client.post("/searches", json=enough).status_code == 201
    # Folds that do not exist, and a GPU device without a GPU, are refused when the spec is validated.
    no_such_fold = search_body(ravdess_root, folds={"n_folds": 4, "only": [4]})
    missing_fold = assert_error(client.post("/searches", json=no_such_fold), 422)
    assert field_locs(missing_fold) == [["body", "folds", "only"]] and "only folds 0..3" in missing_fold["message"]
    no_gpu = assert_error(client.post("/searches", json=search_body(ravdess_root, device="cuda")), 422)
    assert "reserves no GPU" in no_gpu["message"] and field_locs(no_gpu) == [["body", "gpus"]]


def test_a_preset_defaults_to_the_strategys_first(client, ravdess_root):
    body = search_body(ravdess_root)
    del body["preset"]
    darts = client.post("/searches", json=body)
    assert darts.status_code == 201, darts.text
    assert (darts.json()["strategy"], darts.json()["preset"]) == ("darts", "emodarts")
    tpe = client.post("/searches", json={**body, "strategy": "tpe-asha"})
    assert tpe.status_code == 201, tpe.text
    assert (tpe.json()["strategy"], tpe.json()["preset"]) == ("tpe-asha", "bigru-distilhubert")
    assert parse_spec(tpe.json()["spec"]).strategy == "tpe-asha"
    demo = client.post("/searches", json=search_body(ravdess_root, preset="bigru-mfcc-demo"))
    assert demo.status_code == 201, demo.text
    assert demo.json()["spec"]["features"]["layout"] == "frames"


def test_malformed_json_and_wrong_content(client):
    broken = client.post("/searches", content=b'{"name": "x",', headers={"content-type": "application/json"})
    assert "JSON" in assert_error(broken, 422, "validation_error")["message"]
    not_object = client.post("/searches", json=[1, 2])
    assert_error(not_object, 422, "validation_error")
    empty = client.post("/searches", content=b"", headers={"content-type": "application/json"})
    assert_error(empty, 422)


def test_huge_bodies_are_refused(client, ravdess_root):
    limit = client.app.state.settings.max_body_bytes
    declared = client.post("/searches", content=b" " * (limit + 1), headers={"content-type": "application/json"})
    assert "limit" in assert_error(declared, 413, "payload_too_large")["message"]

    def chunks():  # no Content-Length: the body is counted as it streams
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = client.post("/searches", content=chunks(), headers={"content-type": "application/json"})
    assert_error(streamed, 413, "payload_too_large")
    # Within the limit still works.
    assert client.post("/searches", json=search_body(ravdess_root)).status_code == 201


def test_writes_need_the_token_when_one_is_set(db_url, tmp_path, ravdess_root):
    from fastapi.testclient import TestClient

    settings = api_settings(db_url, tmp_path, ravdess_root, api_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        body = search_body(ravdess_root)
        missing = assert_error(client.post("/searches", json=body), 401, "unauthorized")
        assert "Bearer" in missing["message"]
        assert client.post("/searches", json=body).headers["www-authenticate"] == "Bearer"
        wrong = client.post("/searches", json=body, headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 403, "forbidden")
        basic = client.post("/searches", json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert_error(basic, 401)
        good = client.post("/searches", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 201
        search_id = good.json()["id"]
        assert_error(client.post(f"/searches/{search_id}/cancel"), 401)
        assert_error(client.post(f"/searches/{search_id}/resume", headers={"Authorization": "Bearer x"}), 403)
        # Reads stay open.
        assert client.get("/searches").status_code == 200
        assert client.get(f"/searches/{search_id}").status_code == 200


def test_hostile_input_is_never_a_server_error(client, ravdess_root):
    from fastapi.testclient import TestClient

    quiet = TestClient(client.app, raise_server_exceptions=False)
    corpus = {"name": "ravdess", "root": str(ravdess_root)}
    bodies = [
        {"name": "nul\x00name", "corpus": corpus},
        {"name": "x", "corpus": corpus, "idempotency_key": "k\x00"},
        {"name": "x", "corpus": {**corpus, "root": "a\x00b"}},
        {"name": "x", "corpus": {**corpus, "root": "x" * 5000}},
        {"name": "x", "corpus": {**corpus, "root": "/" + "/".join(["y" * 255] * 30)}},
        {"name": "x", "corpus": {**corpus, "classes": ["neutral\x00"]}},
        {"name": "x", "corpus": {**corpus, "speakers": ["nobody"]}},
        {"name": "x", "corpus": {**corpus, "root": 42}},
        {"name": "x", "corpus": corpus, "overrides": {"options.memory_limit_gb": -1}},
        {"name": "x", "corpus": corpus, "overrides": ["space.nodes"]},
        {"name": "x", "corpus": corpus, "spec": {"strategy": "random"}},
        {"name": "x", "spec": {"strategy": "random", "corpus": corpus}},
        {"name": ["x"], "corpus": corpus},
        {"name": "x" * 10_000, "corpus": corpus},
        {"name": "x", "corpus": corpus, "folds": {"only": [-1]}, "seed": 2**70},
    ]
    for body in bodies:
        response = quiet.post("/searches", json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert response.json()["error"]["message"]
    nan = json.dumps({"name": "x", "corpus": corpus, "overrides": {"space.dropout": float("nan")}}).encode()
    infinite = json.dumps({"name": "x", "corpus": corpus, "gpus": float("inf")}).encode()
    for raw in [b"", b"null", b"[]", b'"text"', b"\xff\xfe", b"{" * 5000, b'{"name": NaN}', nan, infinite]:
        response = quiet.post("/searches", content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (raw[:20], response.text)
    search = quiet.post("/searches", json=search_body(ravdess_root)).json()["id"]
    for url in [
        "/searches/a%00b",
        "/searches/..%2F..%2Fetc",
        f"/searches/{search}/trials?stage=a%00b",
        f"/searches/{search}/trials?cursor=" + "W10=",
        f"/searches/{search}/trials?sort=ua&cursor=" + _cursor(["ua", "high", 1]),
        f"/searches/{search}/trials?sort=id&cursor=" + _cursor(["id", None, 10**30]),
        f"/searches/{search}/trials?min_ua=nan",
        f"/searches/{search}/events?after=100000000000000000000000",
        f"/trials/{10**30}",
        "/searches?offset=-1",
    ]:
        response = quiet.get(url)
        assert 400 <= response.status_code < 500, (url, response.text)
    huge_id = quiet.get(f"/searches/{search}/events", headers={"Last-Event-ID": "9" * 40})
    assert huge_id.status_code == 400


def _cursor(parts: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


def test_submissions_never_run_the_strategys_preflight(client, ravdess_root, monkeypatch):
    """Concurrent submissions build no supernet: the preflight runs once, in the worker, on its device."""
    from concurrent.futures import ThreadPoolExecutor

    import nas.strategies

    calls: list[int] = []

    class Counting:
        def preflight(self, spec, n_classes, device):
            calls.append(n_classes)

    monkeypatch.setattr(nas.strategies, "get_strategy", lambda name: Counting())
    body = search_body(ravdess_root, overrides={"options.batch_size": 7})
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: client.post("/searches", json=body).status_code, range(8)))
    assert statuses == [201] * 8 and calls == []
    assert repo.list_searches(sessions_of(client)).total == 8


def test_an_ensemble_of_members_that_do_not_exist_or_have_not_finished_is_refused(client, ravdess_root):
    queued = client.post("/searches", json=search_body(ravdess_root)).json()["id"]
    ensemble = {"preset": "genetic-ensemble", "strategy": "genetic-ensemble"}
    unnamed = client.post("/searches", json=search_body(ravdess_root, **ensemble))
    assert "space.searches" in assert_error(unnamed, 422)["message"]
    unknown = client.post(
        "/searches", json=search_body(ravdess_root, **ensemble, overrides={"space.searches": ["nope"]})
    )
    error = assert_error(unknown, 422, "invalid_config")
    assert error["message"] == "no search with id 'nope'" and field_locs(error) == [["body", "space"]]
    unfinished = client.post(
        "/searches", json=search_body(ravdess_root, **ensemble, overrides={"space.searches": [queued]})
    )
    assert "folds [0] have no finished fold model" in assert_error(unfinished, 422, "invalid_config")["message"]
