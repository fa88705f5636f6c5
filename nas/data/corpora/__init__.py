"""Corpus readers: one module per corpus, one registry, one entry point (`read_corpus`).

A reader only parses names and label files; it never decodes audio, so reading a corpus is
cheap and can run before any feature extraction. Every reader maps its own emotion codes
onto the canonical names in `nas.data.types.EMOTIONS`. A file that cannot be used (a name
that does not parse, an unknown emotion code, a manifest row pointing nowhere) is reported
as a `FileProblem` by name and reading goes on: one bad file must not sink a whole corpus,
and it must not vanish silently either.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from nas.data.types import FileProblem, Utterance
from nas.errors import DataError, UnknownNameError

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class Corpus:
    """What a reader found: usable utterances, files left out by name, and exclusions by count.

    `excluded` counts entries a corpus itself marks as unusable and that are left out on
    purpose (IEMOCAP's `xxx`, "no agreement between annotators"): listing thousands of them
    as problems would bury the real ones, but the count still belongs in the report.

    `sources` are the files whose content (or absence) the listing was read from besides the
    names in the folder tree: label files, a manifest, a demographics table, including a
    candidate that was looked for and missing. A reader that opens a file must list it here:
    `nas.data.listing` reuses a listing only while these files and the folders are unchanged.
    """

    utterances: list[Utterance]
    problems: list[FileProblem]
    excluded: dict[str, int] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)


class CorpusReader(abc.ABC):
    """Reads one corpus layout into a `Corpus`.

    Subclasses set `name` (the registry key users type), `layout` (a one-line summary of
    the expected tree, quoted in error messages) and document the full layout in their
    docstring; they implement `parse`. `read` adds the checks every corpus shares, so a
    wrong path fails the same, clear way whatever the corpus.
    """

    name: ClassVar[str]
    layout: ClassVar[str]
    root_is_file: ClassVar[bool] = False  # True when `root` is a manifest, not a folder

    def read(self, root: Path) -> Corpus:
        """Read the corpus under `root`; DataError when it is missing or holds nothing usable."""
        root = Path(root).expanduser()
        kind = "file" if self.root_is_file else "folder"
        if not root.exists():
            raise DataError(
                f"{self.name}: the {kind} {root} does not exist; pass the {kind} laid out as: {self.layout}"
            )
        if root.is_dir() == self.root_is_file:
            raise DataError(f"{self.name}: {root} is not a {kind}; pass the {kind} laid out as: {self.layout}")
        corpus = self.parse(root)
        if corpus.utterances:
            return corpus
        if corpus.problems:
            examples = "; ".join(str(p) for p in corpus.problems[:3])
            raise DataError(
                f"{self.name}: no usable utterance under {root}: all {len(corpus.problems)} files were "
                f"left out (e.g. {examples}); expected layout: {self.layout}"
            )
        raise DataError(f"{self.name}: no audio file found under {root}; expected layout: {self.layout}")

    @abc.abstractmethod
    def parse(self, root: Path) -> Corpus:
        """Parse an existing `root`; report unusable files as problems instead of raising."""


def audio_files(root: Path) -> Iterator[Path]:
    """Audio files anywhere under `root`, in sorted order so every read is reproducible.

    Names starting with a dot are skipped: they are macOS metadata (`._a01.wav`, often under
    `__MACOSX/`) that archives carry along, not recordings.
    """
    return (
        p
        for p in sorted(root.rglob("*"))
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


# Each implementation imports the base above, so the implementations are imported after it.
from nas.data.corpora.casia import CasiaReader  # noqa: E402
from nas.data.corpora.crema_d import CremaDReader  # noqa: E402
from nas.data.corpora.emodb import EmoDBReader  # noqa: E402
from nas.data.corpora.iemocap import IEMOCAP_4CLASS_IMPROVISED, IemocapReader  # noqa: E402
from nas.data.corpora.manifest import CsvManifestReader  # noqa: E402
from nas.data.corpora.ravdess import RavdessReader  # noqa: E402
from nas.data.corpora.savee import SaveeReader  # noqa: E402
from nas.data.corpora.shemo import ShemoReader  # noqa: E402
from nas.data.corpora.tess import TessReader  # noqa: E402

_READERS: dict[str, type[CorpusReader]] = {
    reader.name: reader
    for reader in (
        RavdessReader,
        CremaDReader,
        TessReader,
        SaveeReader,
        EmoDBReader,
        IemocapReader,
        CasiaReader,
        ShemoReader,
        CsvManifestReader,
    )
}


def corpus_names() -> list[str]:
    """Names `read_corpus` accepts (what `CorpusSpec.name` may be), sorted."""
    return sorted(_READERS)


def get_reader(name: str) -> CorpusReader:
    """The reader registered under `name`; UnknownNameError lists the valid names."""
    try:
        return _READERS[name]()
    except KeyError:
        raise UnknownNameError("corpus", name, corpus_names()) from None


def read_corpus(name: str, root: Path) -> Corpus:
    """Read corpus `name` from `root` (a folder, or the manifest file for `csv`)."""
    return get_reader(name).read(Path(root))


__all__ = [
    "AUDIO_SUFFIXES",
    "IEMOCAP_4CLASS_IMPROVISED",
    "CasiaReader",
    "Corpus",
    "CorpusReader",
    "CremaDReader",
    "CsvManifestReader",
    "EmoDBReader",
    "IemocapReader",
    "RavdessReader",
    "SaveeReader",
    "ShemoReader",
    "TessReader",
    "audio_files",
    "corpus_names",
    "get_reader",
    "read_corpus",
]
