"""CREMA-D (Cao et al. 2014): 91 actors, 12 sentences, 6 emotions."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from nas.data.corpora import Corpus, CorpusReader, audio_files
from nas.data.types import FileProblem, Utterance
from nas.errors import DataError

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
DEMOGRAPHICS = "VideoDemographics.csv"


class CremaDReader(CorpusReader):
    """Reads `AudioWAV/AAAA_SSS_EEE_LL.wav` under the root, genders from `VideoDemographics.csv`.

    AAAA is the actor id (1001-1091, the speaker), SSS the sentence code (e.g. DFA, IEO),
    EEE the emotion (ANG angry, DIS disgust, FEA fearful, HAP happy, NEU neutral, SAD sad)
    and LL the intensity (LO, MD, HI, XX unspecified). The root is the corpus checkout (the
    folder holding `AudioWAV/` and `VideoDemographics.csv`) or `AudioWAV/` itself.

    File names do not carry the actor's sex; `VideoDemographics.csv` (columns ActorID, Sex,
    ...) does. It is looked for in the root, then in its parent (for a root of `AudioWAV/`).
    Without it every gender is unknown and speaker folds are not gender-balanced.
    """

    name = "crema-d"
    layout = "AudioWAV/1001_DFA_ANG_XX.wav (actor_sentence_emotion_level), VideoDemographics.csv beside it"

    def parse(self, root: Path) -> Corpus:
        tables = [root / DEMOGRAPHICS, root.parent / DEMOGRAPHICS]
        genders = _genders(tables)
        utterances: list[Utterance] = []
        problems: list[FileProblem] = []
        for path in audio_files(root):
            match = _NAME.match(path.stem)
            if match is None:
                problems.append(FileProblem(path, "name does not match ACTOR_SENTENCE_EMOTION_LEVEL"))
                continue
            actor, sentence, emotion, level = match.groups()
            if emotion not in _EMOTIONS:
                valid = ", ".join(_EMOTIONS)
                problems.append(FileProblem(path, f"emotion code {emotion} is not a CREMA-D emotion ({valid})"))
            elif level not in _LEVELS:
                problems.append(FileProblem(path, f"level {level} is not LO, MD, HI or XX"))
            else:
                utterances.append(
                    Utterance(
                        path=path,
                        label=_EMOTIONS[emotion],
                        speaker=actor,
                        gender=genders.get(actor),
                        meta={"sentence": sentence, "level": _LEVELS[level]},
                    )
                )
        return Corpus(utterances, problems, sources=tables)


def _genders(tables: list[Path]) -> dict[str, str]:
    """Actor id -> gender from the first of `tables` that exists, or {} when the corpus ships without one."""
    table = next((p for p in tables if p.is_file()), None)
    if table is None:
        return {}
    with table.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.DictReader(handle)
        if not {"ActorID", "Sex"} <= set(rows.fieldnames or ()):
            raise DataError(f"crema-d: {table} lacks the ActorID and Sex columns; fix or remove it")
        genders = {}
        for row in rows:
            sex = (row["Sex"] or "").strip().lower()
            if sex in ("male", "female"):
                genders[row["ActorID"].strip()] = sex
        return genders
