"""What every registered strategy that reads audio promises, run for real on a small RAVDESS corpus.

A strategy added to the registry without a tiny spec in conftest.TINY fails here: register one. The
genetic-ensemble strategy reads earlier searches' predictions, not audio: tests/strategies/test_genetic_ensemble.py.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.bundle import PREDICTIONS, RESULT_FILES, load_model, model_card
from nas.errors import ConfigError, ResourceError, SearchCancelled
from nas.metrics import classification_report
from nas.reporting import InMemoryReporter, TrialState
from nas.runner import run_search
from nas.spec import parse_spec
from nas.strategies import get_strategy, strategy_names
from tests.strategies.conftest import TINY, tiny_spec

STRATEGIES = [name for name in strategy_names() if get_strategy(name).reads_audio]

# A spec each strategy's preflight must refuse before any audio is decoded, and what the refusal says.
CANNOT_RUN = {
    "darts": ({"options.memory_limit_gb": 0.001}, ResourceError, "GB"),
    "tpe-asha": (
        {"features.frontends": [{"kind": "ssl", "model_dir": "/nonexistent/distilhubert"}], "features.max_frames": 50},
        ConfigError,
        "SERNAS_SSL_DIR",
    ),
    "hyperband": ({"options.trial_cpus": 512}, ResourceError, "options.trial_cpus"),
}


def test_every_registered_strategy_has_a_tiny_spec_and_a_refusal():
    assert set(STRATEGIES) == set(TINY) == set(CANNOT_RUN)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_spec_round_trips_through_json(strategy, small_corpus):
    spec = tiny_spec(strategy, small_corpus)
    assert type(spec) is get_strategy(strategy).spec_type
    assert parse_spec(spec.model_dump_json()) == spec
    assert parse_spec(json.loads(spec.model_dump_json())) == spec


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_preflight_refuses_what_cannot_run(strategy, small_corpus, tmp_path):
    overrides, error, message = CANNOT_RUN[strategy]
    spec = tiny_spec(strategy, small_corpus, **overrides)
    with pytest.raises(error, match=message):
        get_strategy(strategy).preflight(spec, 2, "cpu")
    reporter = InMemoryReporter()
    with pytest.raises(error, match=message):  # the runner refuses it before extracting features
        run_search(spec, tmp_path / "run", cache_dir=tmp_path / "cache", reporter=reporter, progress=False)
    assert not (tmp_path / "cache").exists()


@pytest.fixture(params=STRATEGIES)
def finished(request, tiny_search):
    """One uninterrupted tiny search per strategy: (strategy, spec, out, reporter, result)."""
    return tiny_search(request.param)


def test_a_run_reports_trials_and_leaves_a_result_folder(finished):
    _, spec, out, reporter, result = finished
    trials = list(reporter.trials.values())
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), "no trial left running"
    assert len({t.key for t in trials}) == len(trials)
    in_folds = [t for t in trials if t.stage != "final"]
    assert all(t.fold == 0 and t.stage in ("search", "retrain") for t in in_folds)
    retrain = [t for t in trials if t.stage == "retrain"]
    assert len(retrain) == 1 and retrain[0].steps and retrain[0].genome is not None
    # then the chosen genome once more on every speaker: the export
    (final,) = [t for t in trials if t.stage == "final"]
    assert final.fold is None and final.steps and final.genome is not None and final.state == TrialState.COMPLETE
    assert final.genome.architecture == retrain[0].genome.architecture
    exported = json.loads((out / "genome.json").read_text())
    assert exported["provenance"]["trial_id"] == final.id
    assert [t for t in trials if t.stage == "search" and t.steps], "search trials report their epochs"
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["ua_mean"] == result.summary["ua_mean"] and f"val_{spec.objective}" in metrics
    assert metrics["numerics"]["torch"] == torch.__version__
    assert metrics["numerics"]["intra_op_threads"] == spec.threads == 1, "the spec pins the search's threads"
    paced = [m for m in reporter.messages if re.fullmatch(r"fold 0: finished in \d+ (s|min); no fold left", m)]
    assert paced, "a finished fold says how long it took"


def test_predictions_are_stored_per_utterance_for_validation_and_test(finished):
    _, _, out, _, result = finished
    stored = np.load(out / "folds" / "fold-0" / PREDICTIONS)
    test_speakers = {Path(k).parent.name for k in stored["test_keys"]}
    assert test_speakers == set(result.folds[0].test_speakers)
    assert not {Path(k).parent.name for k in stored["val_keys"]} & test_speakers, "validation speakers are not tested"
    for part in ("val", "test"):
        probabilities = stored[f"{part}_probabilities"]
        assert probabilities.shape == (len(stored[f"{part}_keys"]), 2)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert list(stored["classes"]) == ["calm", "angry"]
    rescored = classification_report(stored["test_labels"], stored["test_probabilities"], ("calm", "angry"))
    assert rescored["ua"] == pytest.approx(result.folds[0].metrics["ua"], abs=1e-6), "the stored rows are the tested"


def test_models_are_temperature_scaled_on_validation_and_report_calibration_before_and_after(finished):
    _, _, out, _, result = finished
    fold = result.folds[0].metrics
    assert fold["temperature"] > 0 and set(fold["uncalibrated"]) == {"ece", "mce", "brier"}
    stored = np.load(out / "folds" / "fold-0" / PREDICTIONS)  # the calibrated model's probabilities
    rescored = classification_report(stored["test_labels"], stored["test_probabilities"], ("calm", "angry"))
    assert rescored["ece"] == pytest.approx(fold["ece"], abs=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["expected"]["uncalibrated_ece_mean"] == pytest.approx(fold["uncalibrated"]["ece"])
    genome, model, _ = load_model(out)
    assert float(model.temperature) == pytest.approx(metrics["temperature"]), "the export carries its temperature"
    assert "before temperature scaling" in model_card(genome, metrics)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cancel_stops_and_a_resumed_run_finishes_without_duplicates(strategy, small_corpus, feature_cache, tmp_path):
    spec, out, reporter = tiny_spec(strategy, small_corpus), tmp_path / "run", InMemoryReporter()
    polls = 0

    def cancel_after_a_while() -> bool:
        nonlocal polls
        polls += 1
        # A few polls after the first trial has started (however slowly a loaded machine starts it): inside it.
        return polls > 12 and bool(reporter.trials)

    with pytest.raises(SearchCancelled):
        run_search(
            spec, out, cache_dir=feature_cache, reporter=reporter, is_cancelled=cancel_after_a_while, progress=False
        )
    assert not (out / "metrics.json").exists(), "a cancelled search leaves no result"
    started = {t.key for t in reporter.trials.values()}
    assert started, "the run had begun"

    result = run_search(spec, out, cache_dir=feature_cache, reporter=reporter, progress=False)
    trials = list(reporter.trials.values())
    assert len({t.key for t in trials}) == len(trials), "no trial twice"
    assert started <= {t.key for t in trials}, "no trial lost"
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert [t for t in trials if t.stage == "retrain" and t.state == TrialState.COMPLETE]
    assert result.summary["ua_mean"] > 0 and (out / "metrics.json").is_file()


class _Killed(BaseException):
    """A SIGKILL as the reporter records a trial: no `except Exception` of the run may handle it."""


class _KilledAtFirstFinish(InMemoryReporter):
    def __init__(self) -> None:
        super().__init__()
        self.killed = False

    def finish_trial(self, trial_id: int, state: TrialState, *args, **kwargs) -> None:
        if not self.killed:
            self.killed = True
            raise _Killed(self.trials[trial_id].key)
        super().finish_trial(trial_id, state, *args, **kwargs)


def test_a_darts_run_killed_as_it_records_a_trial_records_it_when_resumed(small_corpus, feature_cache, tmp_path):
    """emoDARTS skips a fold's search on resume when its derived genome is on disk, so that file must not
    outlive a kill before the trial is recorded. (tpe-asha and hyperband resume from Optuna's and Ray Tune's
    own records: their kill tests are in test_tpe_asha.py and test_hyperband.py.)"""
    spec, out, reporter = tiny_spec("darts", small_corpus), tmp_path / "run", _KilledAtFirstFinish()
    with pytest.raises(_Killed) as killed:
        run_search(spec, out, cache_dir=feature_cache, reporter=reporter, progress=False)
    run_search(spec, out, cache_dir=feature_cache, reporter=reporter, progress=False)
    states = {t.key: t.state for t in reporter.trials.values()}
    assert states[str(killed.value)] != TrialState.RUNNING, states
    assert TrialState.RUNNING not in states.values(), states


def test_a_finished_search_extended_with_more_folds_runs_only_the_new_ones(tiny_search, feature_cache, tmp_path):
    _, spec, finished_out, _, _ = tiny_search("tpe-asha")
    out = tmp_path / "run"
    shutil.copytree(finished_out, out)
    extended = spec.model_copy(update={"folds": spec.folds.model_copy(update={"only": (0, 1)})})
    reporter = InMemoryReporter()
    result = run_search(extended, out, cache_dir=feature_cache, reporter=reporter, progress=False)

    assert {t.fold for t in reporter.trials.values() if t.stage != "final"} == {1}, "fold 0 is not run again"
    assert [f.fold for f in result.folds] == [0, 1]
    assert parse_spec((out / "spec.json").read_text()) == extended
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["expected"]["folds"] == 2 and metrics["summary"]["ua_mean"] == result.summary["ua_mean"]
    genome = json.loads((out / "genome.json").read_text())
    assert genome["provenance"]["metrics"]["ua_mean"] == pytest.approx(result.summary["ua_mean"])

    another_seed = extended.model_copy(update={"seed": extended.seed + 1})
    with pytest.raises(ConfigError, match="holds a different search"):
        run_search(another_seed, out, cache_dir=feature_cache, progress=False)
    fewer = spec.model_copy(update={"folds": spec.folds.model_copy(update={"only": (1,)})})
    with pytest.raises(ConfigError, match="the same search with more folds"):
        run_search(fewer, out, cache_dir=feature_cache, progress=False)


def test_test_labels_choose_nothing(tiny_search, feature_cache, tmp_path):
    """The same search on a corpus whose test speakers' calm and angry labels are swapped: the fold's search,
    choice, retrained weights and validation scores are the same; only its test figures change."""
    _, spec, out, _, result = tiny_search("tpe-asha")
    test_speakers = set(result.folds[0].test_speakers)
    swapped = {"02": "05", "05": "02"}  # RAVDESS's third name field: calm, angry
    corpus = tmp_path / "corpus"
    for actor in sorted(spec.corpus.root.iterdir()):
        (corpus / actor.name).mkdir(parents=True)
        for recording in actor.iterdir():
            fields = recording.name.split("-")
            if actor.name in test_speakers:
                fields[2] = swapped.get(fields[2], fields[2])
            (corpus / actor.name / "-".join(fields)).symlink_to(recording.resolve())
    relabelled = spec.model_copy(update={"corpus": spec.corpus.model_copy(update={"root": corpus})})
    again = run_search(relabelled, tmp_path / "run", cache_dir=feature_cache, progress=False).folds[0]

    fold = result.folds[0]
    assert again.genome.architecture == fold.genome.architecture and again.genome.training == fold.genome.training
    weights = [(run / "folds" / "fold-0" / "weights.safetensors").read_bytes() for run in (out, tmp_path / "run")]
    assert weights[0] == weights[1], "the fold's retrained (and calibrated) model is the same"
    for key in ("val_ua", "val_wa", "temperature"):
        assert again.metrics[key] == fold.metrics[key], key
    assert again.metrics["ua"] != fold.metrics["ua"], "the test figures are scored on the swapped labels"
