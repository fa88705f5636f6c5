"""The command line end to end on real RAVDESS audio: search, derive, retrain, test, export, predict."""

import json
import logging
import re
import zipfile
from pathlib import Path

import pytest

from nas.bundle import predict_files
from nas.cli import main
from tests.conftest import link_actors

ACTORS = range(1, 9)  # 8 actors, 4 speaker folds of one male + one female
CLASSES = {"02": "calm", "05": "angry"}
TINY = [
    "--preset", "emodarts-demo",
    "--set", "options.search_epochs=2",
        "--set", "options.search_fraction=0.5",
    "--no-progress",
]  # fmt: skip


def _corpus(tmp_path: Path, ravdess_root: Path) -> Path:
    """A RAVDESS-layout folder of links to 8 real actors, plus one corrupt file with a valid name."""
    root = link_actors(tmp_path / "corpus", ravdess_root, ACTORS)
    (root / "Actor_01" / "03-01-05-02-02-02-01.flac").unlink()
    (root / "Actor_01" / "03-01-05-02-02-02-01.flac").write_bytes(b"not audio at all" * 64)
    return root


def test_tiny_search_exports_a_model_of_every_actor_that_predicts_unseen_ones(tmp_path, ravdess_root, capsys, caplog):
    corpus, out = _corpus(tmp_path, ravdess_root), tmp_path / "run"
    args = ["search", "--corpus", "ravdess", "--data", str(corpus), "--classes", "calm,angry"]
    args += ["--folds", "4", "--only-folds", "0", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    caplog.set_level(logging.INFO, logger="sernas")
    assert main(args + TINY) == 0
    # Before the first epoch, how long the search will take: 2 epochs of the fold's search batches, one step measured
    messages = [r.getMessage() for r in caplog.records]
    estimate = next(i for i, m in enumerate(messages) if m.startswith("supernet search: about "))
    assert estimate < next(i for i, m in enumerate(messages) if m.startswith("fold-0/search epoch 1: "))
    steps = int(re.search(r"for (\d+) steps", messages[estimate]).group(1))
    assert steps % 2 == 0 and steps > 0, messages[estimate]
    # --no-progress: no bars, so a line per epoch of every trial shows the search is alive
    epochs = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert any(m.startswith("fold-0/search epoch 2: ") and "val_ua" in m for m in epochs), epochs
    assert any(m.startswith("final/retrain/emodarts epoch 1: ") for m in epochs), epochs
    assert "exported: the chosen genome trained on " in capsys.readouterr().out

    report = (out / "report.md").read_text()
    assert "03-01-05-02-02-02-01.flac" in report, "the corrupt file must be reported by name"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_fold"] == 0 and len(metrics["folds"]) == 1
    assert metrics["params"] > 0 and set(metrics["summary"]) >= {"ua_mean", "ua_std", "wa_mean"}
    genome = json.loads((out / "genome.json").read_text())
    assert genome["classes"] == ["calm", "angry"] and genome["architecture"]["family"] == "emodarts"
    assert (out / "folds" / "fold-0" / "search" / "genomes.jsonl").read_text().count("\n") == 2
    caplog.clear()
    assert main(args + TINY) == 0  # the same command again: nothing is left to search, so nothing to estimate
    assert not [r for r in caplog.records if r.getMessage().startswith("supernet search: about ")]

    bundle = tmp_path / "model.zip"
    assert main(["export", str(out), "--to", str(bundle)]) == 0
    assert set(zipfile.ZipFile(bundle).namelist()) == {
        "genome.json",
        "weights.safetensors",
        "metrics.json",
        "MODEL_CARD.md",
    }

    # The export is the chosen genome trained on all 8 actors of the corpus (the 31 readable calm and angry files
    # of the ones not held out to stop it early); the fold estimate is what its metrics expect of it.
    actors = {f"Actor_{a:02d}" for a in ACTORS}
    trained_on, stopped_on = set(metrics["trained_on"]["speakers"]), set(metrics["validation_speakers"])
    assert trained_on | stopped_on == actors and not trained_on & stopped_on and len(stopped_on) >= 2
    assert metrics["trained_on"]["utterances"] == 16 * len(trained_on) - ("Actor_01" in trained_on)
    assert metrics["expected"]["ua_mean"] == metrics["summary"]["ua_mean"] and metrics["expected"]["folds"] == 1
    card = zipfile.ZipFile(bundle).read("MODEL_CARD.md").decode()
    assert f"Trained on {metrics['trained_on']['utterances']} utterances of {len(trained_on)} speakers" in card
    assert "(one fold: no spread)" in card

    unseen = [
        path
        for actor in sorted({p.name for p in ravdess_root.glob("Actor_*")} - actors)
        for path in sorted((ravdess_root / actor).glob("*.flac"))
        if path.name.split("-")[2] in CLASSES
    ]
    assert len(unseen) == 64
    predictions = predict_files(bundle, unseen)
    correct = sum(p.label == CLASSES[p.path.name.split("-")[2]] for p in predictions)
    assert correct / len(unseen) >= 0.75, f"only {correct}/64 files of unseen actors right"

    capsys.readouterr()
    assert main(["predict", str(bundle), str(unseen[0])]) == 0
    line = capsys.readouterr().out
    assert unseen[0].name in line and ("calm" in line or "angry" in line)
    assert main(["predict", str(bundle), str(ravdess_root / "Actor_09"), "--json"]) == 0  # a whole folder
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 60 and all(line["label"] in ("calm", "angry") for line in lines)
    assert [line["path"] for line in lines] == sorted(str(p) for p in (ravdess_root / "Actor_09").glob("*.flac"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--corpus", "ravdess", "--data", "/nonexistent/ravdess"], "does not exist"),
        (["--corpus", "ravdes", "--data", "."], "unknown corpus 'ravdes'; choose one of"),
        (["--corpus", "ravdess", "--classes", "angry"], "one class"),
        (["--corpus", "ravdess", "--classes", "angry,bored"], "bored"),
        (["--corpus", "ravdess", "--set", "space.nodes=0"], "space.nodes"),
        (["--corpus", "ravdess", "--set", "nodes=2"], "space.<field>"),
        (["--corpus", "ravdess", "--preset", "emodartz"], "unknown preset 'emodartz'; choose one of: bigru-"),
        (["--corpus", "ravdess", "--strategy", "tpe-asha", "--preset", "emodarts"], "is for strategy 'darts'"),
        (["--corpus", "ravdess", "--strategy", "random"], "unknown strategy 'random'"),
        (["--corpus", "ravdess", "--set", "options.memory_limit_gb=0.01"], "GB"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(argv, message, ravdess_root, tmp_path, capsys):
    if "--data" not in argv:
        argv = [*argv, "--data", str(ravdess_root)]
    code = main(["search", *argv, "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(ravdess_root, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["search", "--corpus", "ravdess", "--data", str(ravdess_root), "--out", str(out), "--no-progress"]
    assert main([*base, "--classes", "angry"]) == 2  # one class: refused when the corpus is read
    assert not (out / "spec.json").exists()
    capsys.readouterr()
    assert main([*base, "--classes", "angry,bored"]) == 2  # another search in the same folder: not "different"
    err = capsys.readouterr().err
    assert "bored" in err and "holds a different search" not in err


def test_predict_takes_folders_and_glob_patterns(tmp_path, capsys):
    from nas.cli import audio_files

    for name in ("a.wav", "b.FLAC", "notes.txt", "deep/c.flac"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert audio_files([str(tmp_path)]) == [tmp_path / "a.wav", tmp_path / "b.FLAC", tmp_path / "deep" / "c.flac"]
    assert audio_files([str(tmp_path / "*.wav"), str(tmp_path / "x.wav")]) == [tmp_path / "a.wav", tmp_path / "x.wav"]
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "missing.zip"), str(tmp_path / "empty")]) == 2
    assert "no audio files there" in capsys.readouterr().err


def test_predict_reports_unreadable_files_by_name(tmp_path, capsys):
    code = main(["predict", str(tmp_path / "missing.zip"), "x.wav"])
    assert code == 2
    assert "no bundle at" in capsys.readouterr().err
