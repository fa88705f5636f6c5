"""Speaker-independent folds and the DARTS split inside a fold.

Emotion recognisers learn speakers as eagerly as emotions, so a score is only meaningful
when no test speaker was ever seen in training. Folds are therefore sets of speakers
(`Fold`), and indices are derived from them; the same `Fold` gives the same indices for
any utterance list that holds those speakers, in whatever order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.data.types import Utterance
from nas.errors import ConfigError, DataError


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: who is trained on, who is tested on (disjoint)."""

    index: int
    train_speakers: tuple[str, ...]
    test_speakers: tuple[str, ...]

    def train_indices(self, utterances: Sequence[Utterance]) -> np.ndarray:
        """Indices into `utterances` spoken by a training speaker (int64, ascending)."""
        return _indices_of(utterances, set(self.train_speakers))

    def test_indices(self, utterances: Sequence[Utterance]) -> np.ndarray:
        """Indices into `utterances` spoken by a test speaker (int64, ascending)."""
        return _indices_of(utterances, set(self.test_speakers))


def speaker_folds(utterances: Sequence[Utterance], n_folds: int, seed: int) -> list[Fold]:
    """Partition the speakers into `n_folds` test groups, balancing genders where known.

    Speakers are shuffled within each gender under `seed` and dealt round-robin to the
    folds, one gender after the other (unknown gender last), the deal carrying on where
    the previous gender stopped. Each fold therefore gets as even a share of each
    gender as the counts allow (RAVDESS, 12 actors, 6 folds: one man and one woman per
    fold) and fold sizes differ by at most one speaker. Every speaker is in exactly one
    test group; each fold trains on all the other speakers.
    """
    genders = _speaker_genders(utterances)
    if n_folds < 2:
        raise DataError(f"speaker folds need n_folds >= 2, got {n_folds}")
    if n_folds > len(genders):
        raise DataError(
            f"cannot make {n_folds} speaker folds from {len(genders)} speakers "
            f"({', '.join(sorted(genders))}); use at most {len(genders)} folds"
        )
    rng = np.random.default_rng(seed)
    groups: list[list[str]] = [[] for _ in range(n_folds)]
    dealt = 0
    for gender in sorted(set(genders.values()), key=lambda g: (g is None, g or "")):
        speakers = sorted(s for s, g in genders.items() if g == gender)
        for i in rng.permutation(len(speakers)):
            groups[dealt % n_folds].append(speakers[i])
            dealt += 1
    everyone = set(genders)
    return [
        Fold(index, tuple(sorted(everyone - set(group))), tuple(sorted(group))) for index, group in enumerate(groups)
    ]


def session_folds(utterances: Sequence[Utterance]) -> list[Fold]:
    """One fold per session, tested on that session's speakers (e.g. IEMOCAP leave-one-session-out).

    A speaker recorded in two sessions would make the folds speaker-dependent, so that
    is refused rather than silently tolerated.
    """
    unknown = [u for u in utterances if u.session is None]
    if unknown:
        raise DataError(
            f"session folds need a session for every utterance, but {len(unknown)} of {len(utterances)} "
            f"have none (e.g. {unknown[0].path}); use speaker folds for this corpus"
        )
    sessions_of: dict[str, set[str]] = {}
    for u in utterances:
        sessions_of.setdefault(u.speaker, set()).add(str(u.session))
    shared = {speaker: sorted(s) for speaker, s in sorted(sessions_of.items()) if len(s) > 1}
    if shared:
        listed = "; ".join(f"{speaker} in {', '.join(s)}" for speaker, s in shared.items())
        raise DataError(
            f"speakers appear in several sessions: {listed}; session folds would not be speaker-independent"
        )
    sessions = sorted({str(u.session) for u in utterances})
    if len(sessions) < 2:
        raise DataError(f"session folds need at least 2 sessions, found {len(sessions)} ({', '.join(sessions)})")
    everyone = set(sessions_of)
    folds = []
    for index, session in enumerate(sessions):
        test = {speaker for speaker, s in sessions_of.items() if session in s}
        folds.append(Fold(index, tuple(sorted(everyone - test)), tuple(sorted(test))))
    return folds


@dataclass
class DartsSplit:
    """A fold's training pool cut for DARTS: four disjoint index arrays whose union is the pool.

    `weights` and `arch` (the two halves of the search set) train the supernet weights and
    its architecture parameters; `train` retrains the derived model and `validation`
    decides its early stopping. They hold only indices of the pool they were cut from, so the
    fold's test speakers never reach any of them.
    """

    weights: np.ndarray
    arch: np.ndarray
    train: np.ndarray
    validation: np.ndarray


def darts_split(
    utterances: Sequence[Utterance],
    train_indices: np.ndarray,
    seed: int,
    search_fraction: float = 0.7,
    validation_fraction: float = 0.15,
) -> DartsSplit:
    """Split a fold's training pool into search (weights + arch) and retraining (train + validation).

    Every cut is stratified by label: `search_fraction` of each class goes to the search
    set, which is halved into weights and arch; `validation_fraction` of each class of the
    rest is carved out for validation. A class with at least two utterances in a set is
    put on both sides of that set's cut, so a small class is not lost to one side by
    rounding. Deterministic for a given seed. The split is by utterance, not by speaker:
    all of it lies inside the fold's training speakers.
    """
    for fraction_name, fraction in (
        ("search_fraction", search_fraction),
        ("validation_fraction", validation_fraction),
    ):
        if not 0 < fraction < 1:
            raise ValueError(f"{fraction_name} must be between 0 and 1, got {fraction}")
    pool = np.unique(np.asarray(train_indices, dtype=np.int64))
    if len(pool) != len(train_indices):
        raise ValueError("train_indices holds duplicates")
    if len(pool) == 0:
        raise DataError("the fold's training pool is empty; nothing to search on")
    rng = np.random.default_rng(seed)
    search, retrain = _stratified_cut(utterances, pool, search_fraction, rng)
    weights, arch = _stratified_cut(utterances, search, 0.5, rng)
    train, validation = _stratified_cut(utterances, retrain, 1 - validation_fraction, rng)
    labels = [utterances[i].label for i in pool]
    for part_name, part in (
        ("weights", weights),
        ("arch", arch),
        ("train", train),
        ("validation", validation),
    ):
        if len(part) == 0:
            raise DataError(
                f"the {part_name} part of the DARTS split is empty ({len(pool)} training utterances in this "
                "fold); use more data, fewer folds, or other search/validation fractions"
            )
    for part_name, part in (("weights", weights), ("arch", arch)):
        missing = sorted(set(labels) - {utterances[i].label for i in part})
        if missing:
            counts = ", ".join(f"{label} ({labels.count(label)})" for label in missing)
            raise DataError(
                f"class(es) {counts} have too few training utterances in this fold to reach the {part_name} "
                "part of the search set; drop or merge them (classes, label_map) or use fewer folds"
            )
    return DartsSplit(weights, arch, train, validation)


def _speaker_genders(utterances: Sequence[Utterance]) -> dict[str, str | None]:
    """Speaker -> gender; a speaker whose utterances disagree on it is a reader bug, not data."""
    genders: dict[str, str | None] = {}
    for u in utterances:
        if genders.setdefault(u.speaker, u.gender) != u.gender:
            raise DataError(f"speaker {u.speaker} is labelled both {genders[u.speaker]} and {u.gender}")
    if not genders:
        raise DataError("no utterances to make folds from")
    return genders


def _indices_of(utterances: Sequence[Utterance], speakers: set[str]) -> np.ndarray:
    return np.array([i for i, u in enumerate(utterances) if u.speaker in speakers], dtype=np.int64)


def _stratified_cut(
    utterances: Sequence[Utterance], indices: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut `indices` into (about `fraction` of each class, the rest), each sorted ascending."""
    labels = np.array([utterances[i].label for i in indices])
    first, second = [], []
    for label in sorted(set(labels)):
        members = rng.permutation(indices[labels == label])
        take = round(len(members) * fraction)
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        first.append(members[:take])
        second.append(members[take:])
    return _joined(first), _joined(second)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def make_folds(spec: Any, utterances: Sequence[Utterance]) -> list[Fold]:
    """The folds a search spec asks for (its `folds` section and seed), restricted to `folds.only`."""
    if spec.folds.by == "session":
        folds = session_folds(utterances)
    else:
        folds = speaker_folds(utterances, spec.folds.n_folds, spec.seed)
    if spec.folds.only is None:
        return folds
    unknown = sorted(set(spec.folds.only) - {f.index for f in folds})
    if unknown:
        raise ConfigError(f"folds.only names folds {unknown}, but there are only folds 0..{len(folds) - 1}")
    return [f for f in folds if f.index in spec.folds.only]
