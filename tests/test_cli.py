"""The command line end to end on real RAVDESS audio: search, derive, retrain, test, export, predict."""

import json
import zipfile
from pathlib import Path

import pytest

from nas.bundle import predict_files
from nas.cli import main

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
    root = tmp_path / "corpus"
    for actor in ACTORS:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for src in (ravdess_root / folder.name).glob("*.flac"):
            (folder / src.name).symlink_to(src)
    (root / "Actor_01" / "03-01-05-02-02-02-01.flac").unlink()
    (root / "Actor_01" / "03-01-05-02-02-02-01.flac").write_bytes(b"not audio at all" * 64)
    return root


def test_tiny_search_exports_a_bundle_that_predicts_held_out_actors(tmp_path, ravdess_root, capsys):
    corpus, out = _corpus(tmp_path, ravdess_root), tmp_path / "run"
    args = ["search", "--corpus", "ravdess", "--data", str(corpus), "--classes", "calm,angry"]
    args += ["--folds", "4", "--only-folds", "0", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(args + TINY) == 0

    report = (out / "report.md").read_text()
    assert "03-01-05-02-02-02-01.flac" in report, "the corrupt file must be reported by name"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_fold"] == 0 and len(metrics["folds"]) == 1
    assert metrics["params"] > 0 and set(metrics["summary"]) >= {"ua_mean", "ua_std", "wa_mean"}
    genome = json.loads((out / "genome.json").read_text())
    assert genome["classes"] == ["calm", "angry"] and genome["architecture"]["family"] == "emodarts"
    assert (out / "folds" / "fold-0" / "search" / "genomes.jsonl").read_text().count("\n") == 2

    bundle = tmp_path / "model.zip"
    assert main(["export", str(out), "--to", str(bundle)]) == 0
    assert set(zipfile.ZipFile(bundle).namelist()) == {
        "genome.json",
        "weights.safetensors",
        "metrics.json",
        "MODEL_CARD.md",
    }

    test_speakers = set(metrics["test_speakers"])
    assert len(test_speakers) == 2
    held_out = [
        path
        for speaker in sorted(test_speakers)
        for path in sorted((ravdess_root / speaker).glob("*.flac"))
        if path.name.split("-")[2] in CLASSES
    ]
    assert len(held_out) == 32
    predictions = predict_files(bundle, held_out)
    correct = sum(p.label == CLASSES[p.path.name.split("-")[2]] for p in predictions)
    assert correct / len(held_out) >= 0.75, f"only {correct}/32 held-out files right"

    capsys.readouterr()
    assert main(["predict", str(bundle), str(held_out[0])]) == 0
    line = capsys.readouterr().out
    assert held_out[0].name in line and ("calm" in line or "angry" in line)


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


def test_predict_reports_unreadable_files_by_name(tmp_path, capsys):
    code = main(["predict", str(tmp_path / "missing.zip"), "x.wav"])
    assert code == 2
    assert "no bundle at" in capsys.readouterr().err
