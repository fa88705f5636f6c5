"""Exported bundles: a zip that rebuilds the model; result folders confined to the results directory."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from nas.bundle import CARD, GENOME, METRICS, WEIGHTS, load_model, save_model
from nas.errors import SernasError
from nas.features.spec import FeatureSpec, Mfcc
from nas.genome import CnnBiLstmAttArchitecture, Genome
from nas.reporting import TrialState
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.api import (  # noqa: F401 - the fixtures register by importing them
    assert_error,
    client_fixture,
    sessions_of,
    settings_fixture,
)
from tests.api.test_reads import queue_search

CLASSES = ("neutral", "happy", "sad")


def write_model(folder: Path) -> Path:
    """A real (untrained, tiny) model saved as a result folder would hold it; returns the weights."""
    from nas.models import build

    genome = Genome(
        input=FeatureSpec(frontends=(Mfcc(n_mfcc=40),), duration_s=4.0, pool_to=(40, 64)),
        architecture=CnnBiLstmAttArchitecture(conv_channels=(4,), lstm_hidden=8, dense=8),
        classes=CLASSES,
    )
    return save_model(folder, genome, build(genome), {"ua": 0.5, "wa": 0.6, "params": 1234})


def completed_search(sessions: sessionmaker[Session]) -> str:
    search_id = queue_search(sessions, "finished one")
    assert repo.mark_finished(sessions, search_id, SearchStatus.COMPLETED, summary={"ua_mean": 0.5})
    return search_id


def unzip(response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_export_a_finished_search(client, settings, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    sessions = sessions_of(client)
    search_id = completed_search(sessions)
    write_model(settings.results_dir / search_id)

    response = client.get(f"/searches/{search_id}/export")
    files = unzip(response)
    assert set(files) == {GENOME, WEIGHTS, METRICS, CARD}
    assert f"{search_id[:8]}.zip" in response.headers["content-disposition"]
    assert json.loads(files[METRICS])["ua"] == 0.5 and b"happy" in files[CARD]
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(response.content)
    genome, model, _ = load_model(bundle)  # rebuilds and loads outside the service
    assert genome.classes == CLASSES and not model.training
    assert list(scratch.iterdir()) == []  # the temporary zip is gone once sent


def test_a_bundle_saved_before_temperature_scaling_loads_uncalibrated_and_one_missing_weights_is_refused(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    weights = write_model(tmp_path)
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if k != "temperature"}, weights)
    _, model, _ = load_model(tmp_path)
    assert float(model.temperature) == 1.0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items()), "every stored weight is loaded"

    dropped = next(k for k in state if k.endswith(".weight"))
    save_file({k: v for k, v in state.items() if k != dropped}, weights)
    with pytest.raises(SernasError, match=f"missing {re.escape(dropped)}"):
        load_model(tmp_path)


def test_export_a_trial(client, settings):
    sessions = sessions_of(client)
    search_id = completed_search(sessions)
    weights = write_model(settings.results_dir / search_id / "folds" / "fold-0")
    trial = repo.start_trial(sessions, search_id, "fold-0/retrain/cnn", {}, fold=0, stage="retrain")
    repo.finish_trial(sessions, trial, TrialState.COMPLETE, {"ua": 0.5}, artifacts={"weights": weights})

    assert set(unzip(client.get(f"/trials/{trial}/export"))) == {GENOME, WEIGHTS, METRICS, CARD}
    detail = client.get(f"/trials/{trial}").json()
    assert detail["artifacts"][0]["name"] == "weights" and len(detail["artifacts"][0]["sha256"]) == 64
    assert "path" not in detail["artifacts"][0]  # server paths stay on the server


def test_no_result_yet_is_a_conflict(client, settings):
    sessions = sessions_of(client)
    queued = queue_search(sessions)
    assert "queued" in assert_error(client.get(f"/searches/{queued}/export"), 409, "no_result")["message"]
    finished_without_files = completed_search(sessions)
    assert_error(client.get(f"/searches/{finished_without_files}/export"), 409, "no_result")

    running = repo.start_trial(sessions, queued, "t", {})
    assert_error(client.get(f"/trials/{running}/export"), 409, "no_result")
    no_weights = repo.start_trial(sessions, queued, "t2", {})
    repo.finish_trial(sessions, no_weights, TrialState.COMPLETE, {"ua": 0.4})
    assert_error(client.get(f"/trials/{no_weights}/export"), 409, "no_result")
    assert_error(client.get("/searches/nope/export"), 404)
    assert_error(client.get("/trials/424242/export"), 404)


@pytest.mark.parametrize("how", ["recorded", "symlink"])
def test_result_folders_outside_the_results_directory_are_never_read(client, settings, tmp_path, how):
    sessions = sessions_of(client)
    search_id = completed_search(sessions)
    elsewhere = tmp_path / "elsewhere"
    weights = write_model(elsewhere)
    if how == "recorded":  # a database row pointing anywhere
        repo.set_result_dir(sessions, search_id, elsewhere)
    else:  # a link inside the results directory leading out of it
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(elsewhere, settings.results_dir / search_id)
    assert_error(client.get(f"/searches/{search_id}/export"), 403, "forbidden_path")

    trial = repo.start_trial(sessions, search_id, "t", {})
    repo.finish_trial(sessions, trial, TrialState.COMPLETE, {"ua": 0.5}, artifacts={"weights": weights})
    assert_error(client.get(f"/trials/{trial}/export"), 403, "forbidden_path")
