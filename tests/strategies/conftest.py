"""A small real corpus (8 RAVDESS actors, calm vs angry), a tiny spec of every strategy that reads audio, and
its finished search (run once per test session)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.reporting import InMemoryReporter
from nas.spec import CorpusSpec, FoldSpec, SpecBase, spec_from_preset
from tests.conftest import link_actors

ACTORS = range(1, 9)  # 8 actors: 4 speaker folds of one man and one woman
# The bundled actors no test corpus holds: no search and no exported model ever trains on them.
UNSEEN_ACTORS = {f"Actor_{i:02d}" for i in range(9, 13)}
CLASSES = {"02": "calm", "05": "angry"}  # RAVDESS emotion codes in the file names

# The smallest search of each strategy that still runs its whole protocol on fold 0.
TINY = {
    "darts": (
        "emodarts-demo",
        {"options.search_epochs": 2, "options.train_epochs": 3, "options.search_fraction": 0.5},
    ),
    "tpe-asha": (
        "bigru-mfcc-demo",
        {
            "options.n_trials": 5,
            "options.n_startup_trials": 3,
            "options.max_epochs": 6,
            "options.min_resource": 2,
            "options.reduction_factor": 2,
        },
    ),
    # 9 configurations of up to 9 epochs, eta 3: Ray fills the brackets from the widest budget: 3 trials of
    # 9 epochs, 5 that start with 3 (2 go on to 9), 1 alone in the bracket that starts with 1.
    "hyperband": ("cnn-families-demo", {"options.n_trials": 9, "options.max_epochs": 9}),
}


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, ravdess_root: Path) -> Path:
    """A RAVDESS-layout folder of links to 8 real actors."""
    return link_actors(tmp_path_factory.mktemp("corpus"), ravdess_root, ACTORS)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the session: each tiny spec's features are computed once."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="session")
def tiny_search(small_corpus: Path, feature_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """strategy -> (strategy, spec, result folder, reporter, result) of its tiny search, run on first use."""
    from nas.runner import run_search

    finished: dict[str, tuple] = {}

    def run(strategy: str) -> tuple:
        if strategy not in finished:
            spec = tiny_spec(strategy, small_corpus)
            out, reporter = tmp_path_factory.mktemp(strategy) / "run", InMemoryReporter()
            result = run_search(spec, out, cache_dir=feature_cache, reporter=reporter, progress=False)
            finished[strategy] = (strategy, spec, out, reporter, result)
        return finished[strategy]

    return run


def tiny_spec(strategy: str, corpus_root: Path, **overrides: object) -> SpecBase:
    preset, tiny = TINY[strategy]
    corpus = CorpusSpec(name="ravdess", root=corpus_root, classes=tuple(CLASSES.values()))
    folds = FoldSpec(n_folds=4, only=(0,))
    return spec_from_preset(preset, corpus, tiny | overrides, folds=folds, device="cpu", threads=1)


def cli_args(strategy: str, corpus: Path, out: Path, cache: Path) -> list[str]:
    """`sernas search` arguments of the strategy's tiny spec (fold 0 of 4, CPU, 1 thread, no progress bars)."""
    preset, overrides = TINY[strategy]
    args = ["search", "--strategy", strategy, "--preset", preset, "--corpus", "ravdess", "--data", str(corpus)]
    args += ["--classes", ",".join(CLASSES.values()), "--folds", "4", "--only-folds", "0", "--device", "cpu"]
    args += ["--out", str(out), "--cache-dir", str(cache), "--threads", "1", "--no-progress"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def held_out_files(ravdess_root: Path, speakers: set[str]) -> list[Path]:
    """The calm and angry files of `speakers`, from the real corpus."""
    return [
        path
        for speaker in sorted(speakers)
        for path in sorted((ravdess_root / speaker).glob("*.flac"))
        if path.name.split("-")[2] in CLASSES
    ]


def held_out_accuracy(bundle: Path, ravdess_root: Path, speakers: set[str]) -> tuple[int, int]:
    """(files right, files) when the exported bundle predicts the calm and angry files of `speakers`."""
    from nas.bundle import predict_files

    files = held_out_files(ravdess_root, speakers)
    predictions = predict_files(bundle, files)
    return sum(p.label == CLASSES[p.path.name.split("-")[2]] for p in predictions), len(files)
