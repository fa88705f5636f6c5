"""tpe-asha end to end on real RAVDESS audio: CLI search with pruning, export, prediction on held-out
actors, the study as optuna-dashboard reads it, a killed run resumed, and bad input refused."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import optuna
import pytest

from nas.bundle import predict_files
from nas.cli import main
from nas.reporting import InMemoryReporter, TrialState
from nas.runner import run_search
from nas.strategies import tpe_asha
from tests.live import free_port
from tests.strategies.conftest import CLASSES, UNSEEN_ACTORS, cli_args, held_out_accuracy, held_out_files, tiny_spec


@pytest.fixture(scope="module")
def cli_run(small_corpus, feature_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tpe-cli") / "run"
    assert main(cli_args("tpe-asha", small_corpus, out, feature_cache)) == 0
    return out


def _trials(study_db: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="fold-0", storage=f"sqlite:///{study_db}").get_trials()


def test_cli_search_prunes_exports_and_predicts_held_out_actors(cli_run, ravdess_root, tmp_path):
    trials = _trials(cli_run / tpe_asha.STUDY_FILE)
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1, "successive halving pruned no trial"
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == 5
    assert all(
        set(t.params) == {"layers", "base_units", "final_units", "lr", "dropout", "l2", "optimizer"} for t in trials
    )

    genome = json.loads((cli_run / "genome.json").read_text())
    assert genome["architecture"]["family"] == "bigru-head" and genome["schema_version"] == 2
    assert genome["input"]["layout"] == "frames" and genome["training"]["monitor"] == "val_loss"
    best = max((t for t in trials if t.value is not None and t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert genome["architecture"]["layers"] == best.params["layers"], "the exported genome is the best trial's"

    bundle = tmp_path / "model.zip"
    assert main(["export", str(cli_run), "--to", str(bundle)]) == 0
    assert "MODEL_CARD.md" in zipfile.ZipFile(bundle).namelist()
    correct, n = held_out_accuracy(bundle, ravdess_root, UNSEEN_ACTORS)  # the export trained on the other 8
    assert n == 64 and correct / n >= 0.7, f"only {correct}/{n} files of unseen actors right (chance half)"


def test_optuna_dashboard_lists_the_studys_trials(cli_run):
    """optuna-dashboard, a client we did not write, opens the study URL the search logs."""
    port = free_port()
    url = tpe_asha.study_url(cli_run)
    dashboard = _venv_tool("optuna-dashboard")
    server = subprocess.Popen(
        [dashboard, url, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", server)
        (study,) = [s for s in studies["study_summaries"] if s["study_name"] == "fold-0"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", server)
        ours = _trials(cli_run / tpe_asha.STUDY_FILE)
        assert len(detail["trials"]) == len(ours)
        assert {t["state"] for t in detail["trials"]} >= {"Complete", "Pruned"}
        assert all(t["intermediate_values"] for t in detail["trials"]), "learning curves are visible"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _venv_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed beside {sys.executable} (a dev dependency)"
    return str(path)


def _get_json(url: str, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"optuna-dashboard did not answer: {server.stderr.read().decode()[-2000:]}"
                ) from None
            time.sleep(0.3)


def test_a_killed_run_resumes_its_study_and_retries_the_stale_trial(small_corpus, feature_cache, tmp_path, monkeypatch):
    out = tmp_path / "run"
    study_db = out / tpe_asha.STUDY_FILE
    search = subprocess.Popen(
        [_venv_tool("sernas"), *cli_args("tpe-asha", small_corpus, out, feature_cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while not _running_with_epochs(study_db):  # kill it inside a trial, after an epoch was reported
            assert search.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial reached its first epoch in time"
            time.sleep(0.2)
    finally:
        search.send_signal(signal.SIGKILL)
        search.wait()
    killed = [t for t in _trials(study_db) if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1

    # The dead trial's heartbeat stops; once older than the grace period, Optuna fails and retries it.
    monkeypatch.setattr(tpe_asha, "GRACE_SECONDS", 1)
    time.sleep(2)
    reporter = InMemoryReporter()
    run_search(tiny_spec("tpe-asha", small_corpus), out, cache_dir=feature_cache, reporter=reporter, progress=False)

    trials = _trials(study_db)
    by_number = {t.number: t for t in trials}
    assert by_number[killed[0].number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retries) == 1 and retries[0].params == killed[0].params, "retried with the same parameters"
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5, "the budget counts finished trials, the killed one not among them"

    ours = [t for t in reporter.trials.values() if t.stage == "search"]
    assert sorted(t.key for t in ours) == sorted(f"fold-0/trial-{t.number}" for t in trials), "none lost or twice"
    assert {t.key: t.state for t in ours}[f"fold-0/trial-{killed[0].number}"] == TrialState.FAILED


def _running_with_epochs(study_db: Path) -> bool:
    """Whether a trial is running and has reported an epoch: read-only SQL, since opening the storage
    with Optuna while the search is still creating it would race its schema creation."""
    if not study_db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{study_db}?mode=ro", uri=True, timeout=5) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM trials JOIN trial_intermediate_values USING (trial_id) WHERE state = 'RUNNING'"
            ).fetchone()
    except sqlite3.OperationalError:  # the tables are not created yet
        return False
    return count > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "tpe-ashaa"], "unknown strategy 'tpe-ashaa'; choose one of"),
        (["--strategy", "tpe-asha", "--set", "space.cnn_cells=3"], "space.cnn_cells"),
        (
            ["--strategy", "tpe-asha", "--set", 'space.params={"layers": {"type": "int", "low": 3, "high": 1}}'],
            "low 3 is above high 1",
        ),
        (["--strategy", "tpe-asha", "--set", "space.fixed.units=3"], "no hyperparameter units"),
        (["--strategy", "tpe-asha", "--preset", "emodarts-demo"], "is for strategy 'darts'"),
        (["--strategy", "tpe-asha", "--set", "features.layout=map"], "frame sequences"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(argv, message, ravdess_root, tmp_path, capsys):
    code = main(["search", "--corpus", "ravdess", "--data", str(ravdess_root), *argv, "--out", str(tmp_path / "r")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_ssl_weights_say_where_to_put_them(ravdess_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SERNAS_SSL_DIR", str(tmp_path / "ssl"))
    args = ["search", "--strategy", "tpe-asha", "--corpus", "ravdess", "--data", str(ravdess_root)]
    assert main([*args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "ssl" / "distilhubert") in err and "save_pretrained" in err and "SERNAS_SSL_DIR" in err
    assert not (tmp_path / "cache").exists(), "refused before any audio was decoded"


def test_bigru_heads_on_frozen_ssl_frames_end_to_end(small_corpus, ravdess_root, tmp_path):
    """The published pipeline on a tiny randomly initialised HuBERT saved locally (no real weights here):
    SSL frames extracted and cached, a tpe-asha search over BiGRU heads, and prediction from the bundle."""
    from transformers import HubertConfig, HubertModel

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embedding_groups=4,
    )
    HubertModel(config).save_pretrained(tmp_path / "tiny-hubert")
    spec = tiny_spec(
        "tpe-asha",
        small_corpus,
        **{
            "features.frontends": [{"kind": "ssl", "model_dir": str(tmp_path / "tiny-hubert"), "dim": 32}],
            "features.duration_s": 3.0,
            "features.max_frames": 150,
            "options.n_trials": 2,
            "options.max_epochs": 3,
        },
    )
    out = tmp_path / "run"
    result = run_search(spec, out, cache_dir=tmp_path / "cache", reporter=InMemoryReporter(), progress=False)
    assert result.folds[0].genome.input.ssl is not None
    assert result.folds[0].genome.input.output_shape == (150, 32)
    held_out = held_out_files(ravdess_root, set(result.folds[0].test_speakers))[:4]
    predictions = predict_files(out, held_out)
    assert all(p.error is None and p.label in CLASSES.values() for p in predictions)
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in predictions)
