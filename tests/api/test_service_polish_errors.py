"""Bodies that are not JSON the API can take get a 422 that says where and what (after the token is
checked), and GET /datasets lists only folders a submission may use."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import MAX_JSON_DEPTH, MAX_REPORTED, create_app
from tests.api import TOKEN, api_settings, assert_error, field_locs, search_body

JSON = {"content-type": "application/json"}


def _client(tmp_path: Path, ravdess_root: Path, **fields: Any) -> Iterator[TestClient]:
    # These checks do not touch the database: SQLite alone is enough.
    settings = api_settings(f"sqlite:///{tmp_path / 'sernas.db'}", tmp_path, ravdess_root, **fields)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(name="client")
def client_fixture(tmp_path: Path, ravdess_root: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, ravdess_root)


@pytest.fixture(name="token_client")
def token_client_fixture(tmp_path: Path, ravdess_root: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, ravdess_root, api_token=TOKEN)


def _raw(ravdess_root: Path, gpus: str) -> bytes:
    """A valid submission, but with `gpus` written as the raw JSON token `gpus`."""
    return json.dumps(search_body(ravdess_root))[:-1].encode() + f', "gpus": {gpus}}}'.encode()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_number_is_named_as_such(client, ravdess_root, token):
    response = client.post("/searches", content=_raw(ravdess_root, token), headers=JSON)
    error = assert_error(response, 422, "validation_error")
    assert field_locs(error) == [["body", "gpus"]]
    assert "finite number" in error["fields"][0]["msg"]
    assert "finite number" in error["message"] and "1024" not in error["message"]


def test_non_finite_numbers_are_found_wherever_they_are(client, ravdess_root):
    body = search_body(ravdess_root, overrides={"options.search_epochs": 1, "features.pool_to": [64, 0]})
    raw = json.dumps(body).replace('"features.pool_to": [64, 0]', '"features.pool_to": [64, NaN]')
    raw = raw.replace('"options.search_epochs": 1', '"options.search_epochs": Infinity')
    error = assert_error(client.post("/searches", content=raw.encode(), headers=JSON), 422, "validation_error")
    assert sorted(field_locs(error), key=str) == [
        ["body", "overrides", "features.pool_to", 1],
        ["body", "overrides", "options.search_epochs"],
    ]


def test_a_body_full_of_nans_gets_a_short_answer(client):
    body = b"[" + b",".join([b"NaN"] * 10_000) + b"]"
    error = assert_error(client.post("/searches", content=body, headers=JSON), 422)
    assert field_locs(error) == [["body", i] for i in range(MAX_REPORTED)]


def test_a_nan_string_in_a_bounded_number_says_finite_not_the_bound(client, ravdess_root):
    # pydantic reads the string "NaN" as a float; the bound check then fails on it.
    error = assert_error(client.post("/searches", json=search_body(ravdess_root, gpus="NaN")), 422)
    assert field_locs(error) == [["body", "gpus"]]
    assert "finite number" in error["message"] and "1024" not in error["message"]


def test_malformed_json_says_line_and_column_not_a_field(client):
    broken = b'{"name": "x",\n  "gpus": }'
    error = assert_error(client.post("/searches", content=broken, headers=JSON), 422, "validation_error")
    assert field_locs(error) == [["body"]]  # not ["body", 24]: an offset is not a field
    assert "malformed JSON at line 2, column 11: Expecting value" in error["message"]


def test_a_body_that_is_not_utf8_is_named_as_such(client):
    error = assert_error(client.post("/searches", content=b'{"name": "\xff"}', headers=JSON), 422)
    assert "not UTF-8" in error["message"] and "offset 10" in error["message"]
    assert "error parsing the body" not in error["message"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_a_body_nested_too_deeply_is_named_as_such(client, depth):
    body = b'{"a":' * depth + b"1" + b"}" * depth
    error = assert_error(client.post("/searches", content=body, headers=JSON), 422)
    assert f"more than {MAX_JSON_DEPTH} levels deep" in error["message"]


def test_a_body_within_the_depth_limit_reaches_the_schema(client):
    body = b'{"a":' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH
    error = assert_error(client.post("/searches", content=body, headers=JSON), 422)
    assert "levels deep" not in error["message"]
    assert ["body", "a"] in field_locs(error)  # the schema's verdict: no such field


def test_an_integer_too_long_to_read_is_named_as_such(client):
    body = b'{"seed": ' + b"9" * 5000 + b"}"
    error = assert_error(client.post("/searches", content=body, headers=JSON), 422)
    assert "integer with more than" in error["message"]


@pytest.mark.parametrize(
    "body",
    [b'{"name": ', b'{"name": "\xff"}', b"[" * 100_000, b'{"gpus": NaN}', b'{"name": "x"}'],
    ids=["malformed", "not-utf8", "too-deep", "nan", "schema-invalid"],
)
def test_the_token_is_checked_before_the_body(token_client, body):
    missing = assert_error(token_client.post("/searches", content=body, headers=JSON), 401, "unauthorized")
    assert "Bearer" in missing["message"]
    assert token_client.post("/searches", content=body, headers=JSON).headers["www-authenticate"] == "Bearer"
    wrong = token_client.post("/searches", content=body, headers={**JSON, "Authorization": "Bearer nope"})
    assert_error(wrong, 403, "forbidden")
    # With the token, the body's own problem is reported.
    good = token_client.post("/searches", content=body, headers={**JSON, "Authorization": f"Bearer {TOKEN}"})
    assert_error(good, 422, "validation_error")


def test_sound_bodies_still_work(token_client, ravdess_root):
    created = token_client.post(
        "/searches", json=search_body(ravdess_root), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert created.status_code == 201, created.text


def test_datasets_leave_out_symlinks_that_escape_the_data_roots(client, tmp_path, ravdess_root):
    roots = tmp_path / "roots"
    outside = tmp_path / "elsewhere"
    (outside / "secret-corpus").mkdir(parents=True)
    (outside / "list.csv").write_text("path,label\n")
    (roots / "real-corpus").mkdir()
    os.symlink(outside / "secret-corpus", roots / "escaping-corpus")
    os.symlink(outside / "list.csv", roots / "escaping.csv")
    os.symlink(roots / "real-corpus", roots / "inner-link")  # stays inside: usable
    os.symlink(ravdess_root, roots / "ravdess-link")  # another data root: usable

    listed = next(r for r in client.get("/datasets").json()["data_roots"] if r["path"] == str(roots))
    assert listed["folders"] == ["inner-link", "ravdess-link", "real-corpus"]
    assert listed["manifests"] == []
    # And what is listed is what a submission may use: the escaping one is refused.
    refused = client.post("/searches", json=search_body(roots / "escaping-corpus"))
    assert_error(refused, 403, "forbidden_path")
