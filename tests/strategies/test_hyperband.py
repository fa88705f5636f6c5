"""hyperband end to end on real RAVDESS audio: a CLI search whose trials stop at Hyperband's rungs, run two
at a time and resume paused trials from their checkpoints; export and prediction on held-out actors; TPE
over several families; a killed run resumed by Tuner.restore; bad input refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.cli import main
from nas.reporting import InMemoryReporter, TrialState
from nas.runner import run_search
from nas.strategies.hyperband import experiment_dir
from tests.strategies.conftest import UNSEEN_ACTORS, cli_args, held_out_accuracy, tiny_spec

# TINY's Hyperband: up to 9 epochs, eta 3: a trial stops at 1, 3 or 9 epochs.
RUNGS = {1, 3, 9}


def _epochs_by_index(rows: dict[str, list[dict]]) -> dict[int, int]:
    """Trial index (a random-search trial id ends in it) -> epochs trained (a trial resumed from a snapshot
    older than its last report trains that epoch again: Tune then records its iteration twice)."""
    return {int(trial.rsplit("_", 1)[1]): max(row["training_iteration"] for row in r) for trial, r in rows.items()}


def _tune_rows(out: Path) -> dict[str, list[dict]]:
    """Tune trial id -> the results Tune recorded for it, in order (its `result.json` lines)."""
    rows = {}
    for result in sorted(experiment_dir(out, 0).glob("*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows


@pytest.fixture(scope="module")
def cli_run(small_corpus, feature_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hyperband-cli") / "run"
    cwd = Path.cwd()
    os.chdir(out.parent)  # a relative --out, as users write it (Tune itself needs absolute paths)
    try:
        assert main(cli_args("hyperband", small_corpus, Path("run"), feature_cache)) == 0
    finally:
        os.chdir(cwd)
    return out


def test_trials_stop_at_the_brackets_rungs(cli_run):
    rows = _tune_rows(cli_run)
    assert len(rows) == 9, "every configuration became a Tune trial"
    epochs = {trial: len(r) for trial, r in rows.items()}
    assert set(epochs.values()) <= RUNGS, f"trials ran {sorted(epochs.values())} epochs, not Hyperband's rungs"
    assert min(epochs.values()) < 9, "the scheduler stopped no trial early"
    assert max(epochs.values()) == 9, "no trial reached max_epochs"
    for r in rows.values():
        assert [row["training_iteration"] for row in r] == list(range(1, len(r) + 1))


def test_paused_trials_go_on_from_their_checkpoint(cli_run):
    resumed = 0
    for r in _tune_rows(cli_run).values():
        assert [row["epoch"] for row in r] == [row["training_iteration"] for row in r], "a trial restarted"
        resumed += len({row["pid"] for row in r}) > 1  # paused at a rung, later run on in a new actor
    assert resumed >= 1, "no trial was paused and resumed"


def test_two_trials_train_at_the_same_time(cli_run):
    epochs = [
        (row["finished_at"] - row["time_this_iter_s"], row["finished_at"], trial)
        for trial, r in _tune_rows(cli_run).items()
        for row in r
    ]
    overlapping = any(
        a_trial != b_trial and a_start < b_end and b_start < a_end
        for a_start, a_end, a_trial in epochs
        for b_start, b_end, b_trial in epochs
    )
    assert overlapping, "no two trials trained at once on 2 CPUs"


def test_cli_search_exports_and_predicts_held_out_actors(cli_run, ravdess_root, tmp_path):
    genome = json.loads((cli_run / "genome.json").read_text())
    assert genome["architecture"]["family"] in ("cnn2d-lstm", "cnn1d-lstm", "cnn-lstm-fused", "lstm-cnn")
    assert genome["training"]["epochs"] == 9 and genome["input"]["layout"] == "map"
    bundle = tmp_path / "model.zip"
    assert main(["export", str(cli_run), "--to", str(bundle)]) == 0
    correct, n = held_out_accuracy(bundle, ravdess_root, UNSEEN_ACTORS)  # the export trained on the other 8
    assert n == 64 and correct / n >= 0.7, f"only {correct}/{n} files of unseen actors right (chance half)"


def test_tpe_over_several_families_with_asynchronous_brackets(small_corpus, feature_cache, tmp_path):
    overrides = {"options.sampler": "tpe", "options.scheduler": "async-hyperband", "options.n_trials": 4}
    spec = tiny_spec("hyperband", small_corpus, **overrides, **{"options.max_epochs": 3})
    reporter = InMemoryReporter()
    run_search(spec, tmp_path / "run", cache_dir=feature_cache, reporter=reporter, progress=False)
    search = [t for t in reporter.trials.values() if t.stage == "search"]
    assert len(search) == 4 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in search)
    for trial in search:
        family = trial.params["family"]
        assert family in spec.space.families
        assert set(trial.params) - {"family"} == set(spec.space.distributions(family)), "only its family's"
        assert trial.steps and trial.metrics["params"] > 0 and trial.metrics["latency_ms_p50"] > 0


def test_a_killed_run_resumes_its_brackets_as_if_never_interrupted(cli_run, small_corpus, feature_cache, tmp_path):
    out = tmp_path / "run"
    sernas = Path(sys.executable).parent / "sernas"
    # Its own session: the kill takes the search and the local Ray it started, as a dying worker would.
    search = subprocess.Popen(
        [str(sernas), *cli_args("hyperband", small_corpus, out, feature_cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        # About half of the 63 epochs: trials have ended, others wait at a rung, others run.
        while sum(len(r) for r in _tune_rows(out).values()) < 30:
            assert search.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial trained in time"
            time.sleep(0.2)
    finally:
        os.killpg(search.pid, signal.SIGKILL)
        search.wait()
    before = _tune_rows(out)
    assert not (out / "metrics.json").exists()

    reporter = InMemoryReporter()
    run_search(tiny_spec("hyperband", small_corpus), out, cache_dir=feature_cache, reporter=reporter, progress=False)

    after = _tune_rows(out)
    assert len(after) == 9 and set(before) <= set(after), "no Tune trial lost or re-created"
    # Same seed, same configurations and initial weights, training resumed bit for bit: the same decisions.
    assert _epochs_by_index(after) == _epochs_by_index(_tune_rows(cli_run)), "the brackets went on as before"
    ours = [t for t in reporter.trials.values() if t.stage == "search"]
    assert len({t.key for t in ours}) == len(ours) and {t.key for t in ours} <= {f"fold-0/trial-{i}" for i in range(9)}
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ours)
    assert (out / "metrics.json").is_file()


def test_the_best_trial_is_its_best_epoch_then_the_lower_loss_then_its_configuration():
    from types import SimpleNamespace

    import pandas as pd

    from nas.strategies.hyperband import _rank

    def result(ua: list[float], loss: list[float], config: dict) -> SimpleNamespace:
        return SimpleNamespace(metrics_dataframe=pd.DataFrame({"val_ua": ua, "val_loss": loss}), config=config)

    late_peak = result([0.3, 0.6, 0.5], [1.0, 0.9, 0.8], {"lr": 1})
    same_ua_lower_loss = result([0.6], [0.7], {"lr": 2})
    tie, tie_again = result([0.6], [0.7], {"lr": 3}), result([0.6], [0.7], {"lr": 3})
    assert _rank(late_peak, "val_ua") == (0.6, -0.9, '{"lr": 1}'), "its best epoch, not its last"
    assert max([late_peak, same_ua_lower_loss], key=lambda r: _rank(r, "val_ua")) is same_ua_lower_loss
    ordered = [
        max(order, key=lambda r: _rank(r, "val_ua")).config
        for order in ([tie, same_ua_lower_loss], [same_ua_lower_loss, tie])
    ]
    assert ordered == [{"lr": 3}, {"lr": 3}], "the listing order never decides"
    assert _rank(tie, "val_ua") == _rank(tie_again, "val_ua")


def test_the_halving_decides_for_the_trial_that_reported_while_another_still_saves_its_pause():
    """Tune keeps a trial RUNNING while it saves the checkpoint of its pause. When the last trial of a rung
    reports then, the decision returned is the reporter's own; deciding for the saving trial instead had the
    reporter stopped and continued at once (CI: Tune's KeyError on a trial whose actor was gone)."""
    from ray.tune.experiment import Trial

    from nas.strategies.hyperband import ResumableHyperBand

    class FakeTrial:
        def __init__(self, index: int) -> None:
            self.experiment_tag = f"{index}_lr=0.001"
            self.status = Trial.PENDING
            self.is_saving = False
            self.last_result: dict = {}

    class FakeController:
        def __init__(self) -> None:
            self.stopped: list[FakeTrial] = []

        def stop_trial(self, trial: FakeTrial) -> None:
            self.stopped.append(trial)

    scheduler = ResumableHyperBand(
        time_attr="training_iteration", max_t=9, reduction_factor=3, metric="val_ua", mode="max"
    )
    controller = FakeController()
    trials = [FakeTrial(i) for i in range(9)]
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    assert scheduler.choose_trial_to_run(controller) is not None
    bracket = scheduler._trial_info[trials[3]][0]
    rung = bracket.current_trials()
    assert [int(t.experiment_tag[0]) for t in rung] == [3, 4, 5, 6, 7], "eta 3, max 9: 5 trials halved at epoch 3"
    saving, reporter = trials[6], trials[7]
    for trial, ua in zip(rung[:4], [0.1, 0.2, 0.3, 0.9], strict=True):
        assert scheduler.on_trial_result(controller, trial, {"training_iteration": 3, "val_ua": ua}) == "PAUSE"
        trial.status = Trial.PAUSED
    saving.status, saving.is_saving = Trial.RUNNING, True  # paused, its checkpoint still being written
    reporter.status = Trial.RUNNING
    decision = scheduler.on_trial_result(controller, reporter, {"training_iteration": 3, "val_ua": 0.0})

    assert decision == "STOP", "the reporter is the rung's worst"
    assert reporter not in controller.stopped, "the reporter is stopped by its decision, not by the controller too"
    assert controller.stopped == [trials[3], trials[4]], "the other losers"
    assert bracket.trials_to_unpause == {trials[5], saving}, "the winners go on, the saving one once paused"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", 'space.families=["cnn9-lstm"]'], "cnn2d-lstm"),
        (["--set", 'space.params={"lstm-cnn": {}}'], "lstm-cnn, which is not searched"),
        (["--set", 'space.fixed={"cnn2d-lstm": {"units": 3}}'], "no hyperparameter units"),
        (["--set", "features.layout=frames"], "(F, T) maps"),
        (["--set", "options.scheduler=bohb"], "options.scheduler"),
        (["--preset", "cnn-families-demo", "--set", 'space.fixed={"cnn-lstm-fused": {"split_rows": 60}}'], "split"),
        (["--set", "options.grace_epochs=99"], "grace_epochs 99 exceeds max_epochs"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(argv, message, ravdess_root, tmp_path, capsys):
    args = ["search", "--strategy", "hyperband", "--corpus", "ravdess", "--data", str(ravdess_root), *argv]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
