"""Any corpus, described by a CSV manifest (the `csv` reader)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from nas.data.corpora import Corpus, CorpusReader
from nas.data.types import EMOTIONS, FileProblem, Utterance
from nas.errors import DataError

REQUIRED = ("path", "label", "speaker")
OPTIONAL = ("gender", "session")
# Common spellings of the canonical names, so a manifest written for another tool reads as is.
_SYNONYMS = {
    "anger": "angry",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "fear": "fearful",
    "disgusted": "disgust",
    "surprise": "surprised",
    "excitement": "excited",
    "frustration": "frustrated",
}
_GENDERS = {"male": "male", "m": "male", "female": "female", "f": "female"}


class CsvManifestReader(CorpusReader):
    """Reads a CSV manifest; the root is the CSV file itself, not a folder.

    Header `path,label,speaker` plus, optionally, `gender` (male/female/m/f, empty for
    unknown) and `session`; any other column is kept in `Utterance.meta` so selections can
    filter on it. Relative paths are resolved against the CSV's folder, so a corpus and
    its manifest can move together. Labels must be canonical emotion names (see
    `nas.data.types.EMOTIONS`) or a common spelling of one (anger, happiness, fear, ...);
    the check is case-insensitive.

    A row with an empty path, label or speaker, an unknown label or gender, a file that
    does not exist, or a path listed twice is reported as a problem naming its row.
    """

    name = "csv"
    layout = "a CSV file with header path,label,speaker[,gender,session]; relative paths from its folder"
    root_is_file = True

    def parse(self, root: Path) -> Corpus:
        corpus = Corpus([], [], sources=[root])
        first_row: dict[Path, int] = {}
        with root.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.DictReader(handle)
            rows.fieldnames = [name.strip().lower() for name in rows.fieldnames or ()]
            missing = [column for column in REQUIRED if column not in rows.fieldnames]
            if missing:
                raise DataError(
                    f"csv: {root} lacks the column(s) {', '.join(missing)}; the header must be "
                    f"{','.join(REQUIRED)} (optionally {','.join(OPTIONAL)})"
                )
            for row in rows:
                cells = {key: (value or "").strip() for key, value in row.items() if key is not None}
                read = _read_row(cells, root, rows.line_num, first_row)
                if isinstance(read, FileProblem):
                    corpus.problems.append(read)
                else:
                    corpus.utterances.append(read)
        return corpus


def _read_row(
    cells: dict[str, str], manifest: Path, number: int, first_row: dict[Path, int]
) -> Utterance | FileProblem:
    """One manifest row as an utterance, or the reason it cannot be one (`first_row` records paths seen)."""
    if not cells["path"]:
        return FileProblem(manifest, f"row {number}: path is empty")
    path = Path(os.path.normpath(manifest.parent / Path(cells["path"]).expanduser()))
    label = _SYNONYMS.get(cells["label"].lower(), cells["label"].lower())
    gender = cells.get("gender", "").lower()
    if not label:
        return FileProblem(path, f"row {number}: label is empty")
    if label not in EMOTIONS:
        valid = ", ".join(EMOTIONS)
        return FileProblem(path, f"row {number}: label {cells['label']!r} is not an emotion name ({valid})")
    if not cells["speaker"]:
        return FileProblem(path, f"row {number}: speaker is empty")
    if gender and gender not in _GENDERS:
        return FileProblem(path, f"row {number}: gender {cells['gender']!r} is not male, female, m or f")
    if path in first_row:
        return FileProblem(path, f"row {number}: listed again (first on row {first_row[path]})")
    if not path.is_file():
        return FileProblem(path, f"row {number}: file does not exist")
    first_row[path] = number
    return Utterance(
        path=path,
        label=label,
        speaker=cells["speaker"],
        gender=_GENDERS.get(gender),
        session=cells.get("session") or None,
        meta={key: value for key, value in cells.items() if key not in (*REQUIRED, *OPTIONAL)},
    )
