"""Searches that could only fail once started are refused at submission, with a 4xx naming the field to fix.

Each case is a spec that is valid on its own but cannot run on its corpus (read as a listing, no audio
decoded): folds the corpus cannot make, a fold whose training pool a strategy cannot cut, a GPU device
without a GPU. The cluster's resources are tested in tests/workers/test_cluster_resources.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.spec import CorpusSpec, spec_from_preset
from nas.store import repository as repo
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    assert_error,
    client_fixture,
    field_locs,
    search_body,
    sessions_of,
    settings_fixture,
)

CLASSES = ("neutral", "happy", "sad")


def _manifest(root: Path, rows: list[tuple[Path, str, str, str]]) -> Path:
    """A CSV corpus in the extra data root: rows of (audio file, label, speaker, session)."""
    manifest = root / "list.csv"
    lines = [
        "path,label,speaker,session",
        *(f"{path},{label},{speaker},{session}" for path, label, speaker, session in rows),
    ]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _wavs(ravdess_root: Path, n: int) -> list[Path]:
    return sorted(ravdess_root.glob("Actor_*/*.flac"))[:n]


def _csv_body(manifest: Path, **fields) -> dict:
    body = search_body(manifest, **fields)
    body["corpus"] = {"name": "csv", "root": str(manifest), "classes": list(CLASSES)}
    return body


def _refused(client, body: dict, loc: list, says: str, status: int = 422) -> dict:
    error = assert_error(client.post("/searches", json=body), status)
    assert loc in field_locs(error), error
    assert says in error["message"], error
    assert repo.list_searches(sessions_of(client)).total == 0  # nothing was queued
    return error


def test_folds_that_do_not_exist_are_refused(client, ravdess_root):
    error = _refused(
        client,
        search_body(ravdess_root, folds={"n_folds": 6, "only": [9]}),
        ["body", "folds", "only"],
        "only names folds [9], but there are only folds 0..5",
    )
    assert "raise n_folds" in error["message"]


def test_more_folds_than_speakers_are_refused(client, ravdess_root):
    speakers = len(list(ravdess_root.glob("Actor_*")))
    error = _refused(
        client,
        search_body(ravdess_root, folds={"n_folds": 50}),
        ["body", "folds", "n_folds"],
        f"folds.n_folds 50 needs as many speakers, but the corpus has {speakers}",
    )
    assert error["type"] == "invalid_config" and f"use at most {speakers} folds" in error["message"]
    # The same inside a whole spec is located inside it.
    spec = spec_from_preset("emodarts-demo", CorpusSpec(name="ravdess", root=ravdess_root, classes=CLASSES))
    whole = spec.model_dump(mode="json") | {"folds": {"n_folds": 50}}
    _refused(client, {"name": "whole", "spec": whole}, ["body", "spec", "folds", "n_folds"], "folds.n_folds 50")


def test_a_cuda_device_without_a_gpu_is_refused(client, ravdess_root):
    error = _refused(client, search_body(ravdess_root, device="cuda", gpus=0), ["body", "gpus"], "reserves no GPU")
    assert "set gpus to 1" in error["message"]
    cuda_literal = assert_error(client.post("/searches", json=search_body(ravdess_root, device="cuda:0")), 422)
    assert ["body", "device"] in field_locs(cuda_literal)
    # Per-trial GPUs of tpe-asha: the same field, the same rule.
    tpe = search_body(ravdess_root, preset="bigru-mfcc-demo", device="cuda")
    _refused(client, tpe, ["body", "gpus"], "reserves no GPU")


def test_session_folds_on_a_corpus_without_sessions_are_refused(client, ravdess_root):
    error = _refused(
        client,
        search_body(ravdess_root, folds={"by": "session"}),
        ["body", "folds", "by"],
        "session folds need a session for every utterance",
    )
    assert "use speaker folds" in error["message"] and error["type"] == "invalid_config"


def test_session_folds_the_sessions_cannot_make_are_refused(client, ravdess_root, tmp_path):
    roots = tmp_path / "roots"
    wavs = _wavs(ravdess_root, 60)
    # Two sessions of two speakers each, ten utterances of each class per session.
    rows = [(w, CLASSES[i % 3], f"s{i % 4}", f"ses{i % 4 // 2}") for i, w in enumerate(wavs)]
    manifest = _manifest(roots, rows)
    fine = client.post("/searches", json=_csv_body(manifest, folds={"by": "session", "only": [1]}))
    assert fine.status_code == 201, fine.text

    error = assert_error(client.post("/searches", json=_csv_body(manifest, folds={"by": "session", "only": [2]})), 422)
    assert ["body", "folds", "only"] in field_locs(error) and "only folds 0..1" in error["message"]

    shared = [*rows[:-1], (rows[-1][0], rows[-1][1], "s0", "ses1")]  # s0 now speaks in both sessions
    _manifest(roots, shared)
    error = assert_error(client.post("/searches", json=_csv_body(manifest, folds={"by": "session"})), 422)
    assert ["body", "folds", "by"] in field_locs(error) and "s0 in ses0, ses1" in error["message"]


@pytest.mark.parametrize("preset", ["bigru-mfcc-demo", "cnn-families-demo"])
def test_folds_without_held_out_speakers_are_refused_for_trials_judged_on_them(client, ravdess_root, preset):
    # Two speakers, two folds: each fold trains on one speaker, and tpe-asha and hyperband judge their
    # trials on training speakers held out of it (two actors have 8 neutral utterances: too few).
    two_speakers = {"speakers": ["Actor_01", "Actor_02"], "classes": ["happy", "sad", "angry"]}
    body = search_body(ravdess_root, preset=preset, folds={"n_folds": 2})
    body["corpus"].update(two_speakers)
    error = _refused(client, body, ["body", "folds", "n_folds"], "fold 0 trains on 1 speaker(s)")
    assert "needs at least 2" in error["message"]
    darts = search_body(ravdess_root, folds={"n_folds": 2, "only": [0]})
    darts["corpus"].update(two_speakers)
    accepted = client.post("/searches", json=darts)  # darts cuts a fold's pool by utterance, not speaker
    assert accepted.status_code == 201, accepted.text


def test_a_class_too_thin_for_the_darts_split_of_a_fold_is_refused(client, ravdess_root, tmp_path):
    wavs = _wavs(ravdess_root, 70)
    # Six speakers; "sad" has its ten utterances from s0 but one: the fold testing s0 keeps one sad
    # utterance to train on, which cannot reach both halves of the search set.
    rows = [(w, CLASSES[i % 2], f"s{i % 6}", "") for i, w in enumerate(wavs[:60])]
    rows += [(w, "sad", "s0" if i else "s1", "") for i, w in enumerate(wavs[60:])]
    manifest = _manifest(tmp_path / "roots", rows)
    error = _refused(client, _csv_body(manifest, folds={"n_folds": 6}), ["body", "folds"], "sad (1)")
    assert "fold " in error["message"] and "use fewer folds" in error["message"]
