"""From a SearchSpec's corpus section to arrays a strategy can train on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nas.augment.waveform import AudioAugment
from nas.data.corpora import Corpus, read_corpus
from nas.data.segments import window_index
from nas.data.selection import require_enough, select
from nas.data.types import FileProblem, Utterance
from nas.errors import DataError
from nas.features.extract import extract, extract_augmented
from nas.features.spec import FeatureSpec, Segments
from nas.reporting import Reporter
from nas.spec import CorpusSpec


@dataclass(frozen=True)
class Examples:
    """Inputs and labels a model trains or is scored on; `lengths` for frame sequences only."""

    x: np.ndarray  # (N, 1, F, T) maps or (N, T, D) zero-padded frames
    y: np.ndarray  # (N,) int64
    lengths: np.ndarray | None = None  # (N,) int64 true frame counts

    def __post_init__(self) -> None:
        assert len(self.x) == len(self.y), f"x has {len(self.x)} examples but y has {len(self.y)}"
        assert self.lengths is None or len(self.lengths) == len(self.x), "one length per example"

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, index: np.ndarray) -> Examples:
        return Examples(self.x[index], self.y[index], None if self.lengths is None else self.lengths[index])

    def windows(self, frames: int, stride: int) -> Examples:
        """Every window of every sequence (`nas.data.segments.window_index`), labelled with its sequence's label."""
        assert self.lengths is not None, "windows are cut from frame sequences, which carry their lengths"
        index = window_index(self.lengths, self.x.shape[1], frames, stride)
        x = np.where(index.valid[..., None], self.x[index.rows[:, None], index.positions], 0)  # (N, frames, D)
        return Examples(x.astype(self.x.dtype, copy=False), self.y[index.rows], index.lengths)


@dataclass
class PreparedData:
    """A corpus after selection, validation and feature extraction (features not yet scaled)."""

    utterances: list[Utterance]
    x: np.ndarray  # (N, 1, F, T) maps or (N, T, D) zero-padded frames, float32
    y: np.ndarray  # (N,) int64 index into `classes`
    classes: tuple[str, ...]
    problems: list[FileProblem] = field(default_factory=list)
    lengths: np.ndarray | None = None  # (N,) int64 true frame counts; frames only
    augmented: list[np.ndarray] = field(default_factory=list)  # one array like `x` per augmented copy
    augmented_lengths: list[np.ndarray] = field(default_factory=list)  # one like `lengths` per copy; frames only

    def __post_init__(self) -> None:
        assert len(self.utterances) == len(self.x) == len(self.y), "utterances, x and y must align"
        assert all(a.shape == self.x.shape for a in self.augmented), "each augmented copy aligns with x"
        assert len(self.augmented_lengths) == (len(self.augmented) if self.lengths is not None else 0), (
            "one lengths per copy"
        )

    def rows(self, index: np.ndarray) -> Examples:
        """The original rows: what validation and test score on."""
        return Examples(self.x[index], self.y[index], None if self.lengths is None else self.lengths[index])

    def training_rows(self, index: np.ndarray, segments: Segments | None = None) -> Examples:
        """The original rows followed by each augmented copy of them, labels repeated: what a model trains on;
        with `segments`, each cut into its training windows."""
        if not self.augmented:
            rows = self.rows(index)
        else:
            x = np.concatenate([self.x[index], *(copy[index] for copy in self.augmented)])
            y = np.tile(self.y[index], 1 + len(self.augmented))
            lengths = None
            if self.lengths is not None:
                lengths = np.concatenate([self.lengths[index], *(copy[index] for copy in self.augmented_lengths)])
            rows = Examples(x, y, lengths)
        return rows if segments is None else rows.windows(segments.frames, segments.train_stride)


def select_utterances(
    corpus: CorpusSpec, reporter: Reporter, read: Callable[[str, Path], Corpus] = read_corpus
) -> tuple[list[Utterance], list[FileProblem]]:
    """Read and filter the corpus (no audio decoded yet); files the reader rejects are logged by name.
    `read` reads a listing (`read_corpus`, or a `nas.data.listing.CorpusListings`'s `read`)."""
    listing = read(corpus.name, corpus.root)
    for problem in listing.problems:
        reporter.log(f"skipped {problem}")
    for reason, count in listing.excluded.items():
        reporter.log(f"left out {count} x {reason}")
    chosen = select(listing.utterances, corpus.classes, corpus.label_map, corpus.speakers, corpus.meta)
    require_enough(chosen)
    return chosen, list(listing.problems)


def class_names(utterances: list[Utterance], corpus: CorpusSpec) -> tuple[str, ...]:
    present = sorted({u.label for u in utterances})
    return tuple(c for c in corpus.classes if c in present) if corpus.classes else tuple(present)


class ExtractionLog:
    """Extraction progress as a few log lines of a reporter ("features: 360/720 files"), for whoever cannot
    see a terminal's bar (a service's worker): the first file, each further tenth of the files but at
    most one line per `min_seconds`, a line at least every `every_seconds`, and the last file."""

    def __init__(
        self,
        reporter: Reporter,
        min_seconds: float = 1.0,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reporter, self.min_seconds, self.every_seconds, self.clock = reporter, min_seconds, every_seconds, clock
        self._last: tuple[str, int, float] | None = None  # what, tenth and time of the last line

    def __call__(self, what: str, done: int, total: int) -> None:
        now, tenth = self.clock(), done * 10 // total
        last = self._last
        if last is not None and last[0] == what and done < total:
            since = now - last[2]
            if since < self.every_seconds and (tenth == last[1] or since < self.min_seconds):
                return
        self._last = (what, tenth, now)
        self.reporter.log(f"{what}: {done}/{total} files")


def featurise(
    utterances: list[Utterance],
    problems: list[FileProblem],
    corpus: CorpusSpec,
    features: FeatureSpec,
    reporter: Reporter,
    cache_dir: Path | None,
    progress: bool = True,
    augment: AudioAugment | None = None,
    seed: int = 0,
) -> PreparedData:
    """Decode and featurise the selected utterances; unusable files are reported by name and left out.

    With `augment`, also featurise `augment.copies` augmented copies (seeded from `seed`) of every usable
    utterance, for training rows. Progress is a bar on the terminal with `progress`, else a few log lines
    of `reporter` (`ExtractionLog`): a worker's extraction can take minutes."""
    on_progress = None if progress else ExtractionLog(reporter)
    extracted = extract(utterances, features, cache_dir, progress=progress, on_progress=on_progress)
    for problem in extracted.problems:
        reporter.log(f"skipped {problem}")
    kept = [utterances[i] for i in extracted.kept]
    if len(kept) < len(utterances):
        reporter.log(f"{len(utterances) - len(kept)} of {len(utterances)} files could not be used")
    try:
        require_enough(kept)
    except DataError as exc:
        raise DataError(f"{exc} (after leaving out {len(extracted.problems)} unreadable files)") from exc
    classes = class_names(kept, corpus)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[u.label] for u in kept], dtype=np.int64)
    copies = (
        []
        if augment is None
        else extract_augmented(kept, features, augment, seed, cache_dir, progress=progress, on_progress=on_progress)
    )
    if failed := [problem for copy in copies for problem in copy.problems]:
        # Each file decoded a moment ago for its original features: it changed or vanished since.
        raise DataError(f"{len(failed)} file(s) could not be read again for augmentation, e.g. {failed[0]}")
    return PreparedData(
        kept,
        extracted.x,
        y,
        classes,
        problems + extracted.problems,
        extracted.lengths,
        augmented=[copy.x for copy in copies],
        augmented_lengths=[copy.lengths for copy in copies if copy.lengths is not None],
    )
