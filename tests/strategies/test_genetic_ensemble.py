"""genetic-ensemble over real finished tiny searches (tpe-asha and hyperband, fold 0 of 4, 8 RAVDESS actors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nas.bundle import GENOME, PREDICTIONS, export_bundle, predict_files
from nas.errors import ConfigError
from nas.genome import EnsembleGenome, parse_genome
from nas.reporting import InMemoryReporter, TrialState
from nas.runner import run_search
from nas.spec import CorpusSpec, FoldSpec, parse_spec, spec_from_preset
from nas.trials import FolderTrials
from tests.strategies.conftest import CLASSES, held_out_files

SMALL = {"options.generations": 12, "options.population": 16, "options.restarts": 2}


def ensemble_spec(corpus_root: Path, searches: list[Path], **overrides: object):
    corpus = CorpusSpec(name="ravdess", root=corpus_root, classes=tuple(CLASSES.values()))
    return spec_from_preset(
        "genetic-ensemble",
        corpus,
        SMALL | {"space.searches": [str(s) for s in searches]} | overrides,
        folds=FoldSpec(n_folds=4, only=(0,)),
        device="cpu",
    )


@pytest.fixture(scope="module")
def members(tiny_search) -> list[Path]:
    return [tiny_search("tpe-asha")[2], tiny_search("hyperband")[2]]


@pytest.fixture(scope="module")
def ensemble(members, small_corpus, tmp_path_factory):
    spec = ensemble_spec(small_corpus, members)
    out, reporter = tmp_path_factory.mktemp("ensemble") / "run", InMemoryReporter()
    result = run_search(spec, out, reporter=reporter, progress=False)
    return spec, out, reporter, result


def test_weights_beat_or_tie_the_unweighted_average_on_validation(ensemble):
    spec, _, _, result = ensemble
    metrics = result.folds[0].metrics
    names = [m["name"] for m in metrics["members"]]
    assert sorted(names) == sorted(f"{folder} fold 0" for folder in spec.space.searches), "2 members <= top_k"
    weights = [m["weight"] for m in metrics["members"]]
    assert sum(weights) == pytest.approx(1.0) and all(w >= 0 for w in weights)
    assert metrics["val_macro_f1"] >= metrics["uniform"]["val_macro_f1"]
    assert metrics["val_macro_f1"] == pytest.approx(metrics["ga"]["fitness"])
    for key in ("ua", "wa", "macro_f1"):
        assert 0 <= metrics[key] <= 1 and 0 <= metrics["uniform"][key] <= 1 and 0 <= metrics["best_single"][key] <= 1
    assert result.summary["uniform_ua_mean"] == metrics["uniform"]["ua"]
    assert metrics["best_single"]["member"] in {m["name"] for m in metrics["members"]}


def test_the_best_single_member_is_chosen_on_validation_and_scored_as_stored(ensemble, members):
    _, _, _, result = ensemble
    metrics = result.folds[0].metrics
    stored = {f"{folder} fold 0": np.load(folder / "folds" / "fold-0" / PREDICTIONS) for folder in members}
    from nas.metrics import classification_report

    val = {
        name: classification_report(p["val_labels"], p["val_probabilities"], ("calm", "angry"))["macro_f1"]
        for name, p in stored.items()
    }
    chosen = metrics["best_single"]["member"]
    assert val[chosen] == max(val.values())
    test = classification_report(stored[chosen]["test_labels"], stored[chosen]["test_probabilities"], ("calm", "angry"))
    assert metrics["best_single"]["ua"] == pytest.approx(test["ua"])


def test_each_restart_reports_its_generations_and_the_fold_model_is_an_ensemble(ensemble):
    _, out, reporter, _ = ensemble
    trials = {t.key: t for t in reporter.trials.values()}
    assert set(trials) == {"fold-0/restart-0", "fold-0/restart-1", "fold-0/ensemble"}
    for restart in ("fold-0/restart-0", "fold-0/restart-1"):
        steps = dict(trials[restart].steps)
        assert sorted(steps) == list(range(1, 13)) and {"val_macro_f1", "fitness_mean"} <= set(steps[1])
        best = [steps[g]["val_macro_f1"] for g in sorted(steps)]
        assert best == sorted(best), "elitism: a generation's best never falls"
    final = trials["fold-0/ensemble"]
    assert final.state == TrialState.COMPLETE and isinstance(final.genome, EnsembleGenome)
    genome = parse_genome((out / GENOME).read_text())
    assert isinstance(genome, EnsembleGenome) and len(genome.members) == 2
    assert "bigru-head" in {m.family for m in genome.members}, "tpe-asha's member is one of the two"
    assert "| unweighted average |" in (out / "report.md").read_text()


def test_the_ensemble_bundle_predicts_real_held_out_files_as_the_search_scored_them(ensemble, ravdess_root, tmp_path):
    _, out, _, result = ensemble
    bundle = export_bundle(out, tmp_path / "ensemble.zip")
    genome = parse_genome((out / GENOME).read_text())
    assert genome.members[0].input != genome.members[1].input, "members read different features"
    files = held_out_files(ravdess_root, set(result.folds[0].test_speakers))
    predictions = predict_files(bundle, files)
    assert all(p.error is None for p in predictions) and len(predictions) == len(files)
    right = sum(p.label == CLASSES[p.path.name.split("-")[2]] for p in predictions)
    assert right / len(files) == pytest.approx(result.folds[0].metrics["wa"], abs=0.05)
    assert "weight" in __import__("zipfile").ZipFile(bundle).read("MODEL_CARD.md").decode()


def test_members_of_another_seed_are_refused_naming_them(members, small_corpus, tmp_path):
    moved = tmp_path / "other-seed"
    shutil.copytree(members[1], moved)
    spec = json.loads((moved / "spec.json").read_text())
    (moved / "spec.json").write_text(json.dumps(spec | {"seed": 1}))
    with pytest.raises(ConfigError, match=rf"{moved} fold 0: seed 1 \(this search: 0\)"):
        run_search(ensemble_spec(small_corpus, [members[0], moved]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_members_validated_on_other_rows_are_refused(tiny_search, members, small_corpus, tmp_path):
    darts = tiny_search("darts")[2]  # emoDARTS validates on an utterance split, not on held-out speakers
    with pytest.raises(ConfigError, match="different validation rows"):
        run_search(ensemble_spec(small_corpus, [members[0], darts]), tmp_path / "run", progress=False)


def test_a_folder_that_is_no_result_and_trial_ids_outside_the_service_are_refused(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="not a result folder"):
        run_search(ensemble_spec(small_corpus, [tmp_path]), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="study database"):
        FolderTrials().trials([1])


def test_a_spec_without_members_says_how_to_name_them(small_corpus):
    with pytest.raises(ConfigError, match=r"space\.searches"):
        spec_from_preset("genetic-ensemble", CorpusSpec(name="ravdess", root=small_corpus))


def test_spec_round_trips_through_json(members, small_corpus):
    spec = ensemble_spec(small_corpus, members)
    assert parse_spec(spec.model_dump_json()) == spec and spec.objective == "macro_f1"


def test_a_finished_ensemble_resumes_without_running_again(ensemble, tmp_path):
    spec, out, _, result = ensemble
    reporter = InMemoryReporter()
    again = run_search(spec, out, reporter=reporter, progress=False)
    assert not reporter.trials, "the finished fold is read back, not evolved again"
    assert again.folds[0].metrics["ua"] == result.folds[0].metrics["ua"]


def _record(sessions, search: tuple) -> tuple[str, int, int]:
    """A finished tiny search's trials written to the study database as the service's DbReporter writes them:
    (search id, id of its fold model, id of one of its search trials)."""
    from nas.store import repository as repo
    from nas.store.reporter import DbReporter

    strategy, spec, _, reporter, _ = search
    search_id = repo.create_search(sessions, spec.model_dump(mode="json"), strategy, strategy).id
    stored = DbReporter(sessions, search_id)
    ids = {}
    for trial in reporter.trials.values():
        ids[trial.stage] = stored.start_trial(trial.key, trial.params, fold=trial.fold, stage=trial.stage)
        stored.finish_trial(ids[trial.stage], trial.state, trial.metrics, trial.genome, trial.artifacts)
    stored.close()
    return search_id, ids["retrain"], ids["search"]


def test_members_from_the_study_database_by_search_and_by_trial(tiny_search, sessions, small_corpus, tmp_path):
    from nas.store.trials import StoreTrials

    (tpe, tpe_model, tpe_trial), (hyperband, hyperband_model, _) = (
        _record(sessions, tiny_search(strategy)) for strategy in ("tpe-asha", "hyperband")
    )
    source = StoreTrials(sessions)
    by_search = run_search(ensemble_spec(small_corpus, [tpe, hyperband]), tmp_path / "a", trials=source)
    names = {m["name"] for m in by_search.folds[0].metrics["members"]}
    assert names == {
        f"trial {tpe_model} (search {tpe[:8]}, fold 0)",
        f"trial {hyperband_model} (search {hyperband[:8]}, fold 0)",
    }

    by_trial = ensemble_spec(small_corpus, [], **{"space.searches": [], "space.trials": [hyperband_model, tpe_model]})
    result = run_search(by_trial, tmp_path / "b", trials=source)
    assert result.folds[0].metrics["val_macro_f1"] == by_search.folds[0].metrics["val_macro_f1"]

    with pytest.raises(ConfigError, match=f"trial {tpe_trial} .* is not a finished fold model"):
        source.trials([tpe_trial])  # a search trial: it keeps no predictions
    with pytest.raises(ConfigError, match="no trial with id 999999"):
        source.trials([999999])
    with pytest.raises(ConfigError, match="no search with id 'nope'"):
        source.fold_models("nope")


def test_the_command_line_runs_an_ensemble_of_result_folders_and_predicts_with_it(
    members, small_corpus, ravdess_root, tmp_path, capsys
):
    from nas.cli import main

    out = tmp_path / "ensemble"
    args = ["search", "--strategy", "genetic-ensemble", "--corpus", "ravdess", "--data", str(small_corpus)]
    args += ["--classes", ",".join(CLASSES.values()), "--folds", "4", "--only-folds", "0", "--out", str(out)]
    args += ["--set", f"space.searches={json.dumps([str(m) for m in members])}"]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0, capsys.readouterr().err
    assert main(["export", str(out)]) == 0
    files = held_out_files(ravdess_root, {"Actor_01"})[:2]
    assert main(["predict", str(out / "bundle.zip"), *map(str, files)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{path}: " in printed for path in files)


def test_an_ensemble_refuses_noise_scores_of_its_own(members, small_corpus):
    with pytest.raises(ValueError, match="noise_snr_db: an ensemble reads its members' stored predictions"):
        ensemble_spec(small_corpus, members).model_validate(
            ensemble_spec(small_corpus, members).model_dump() | {"noise_snr_db": (10.0,)}
        )
