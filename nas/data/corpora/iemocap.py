"""IEMOCAP (Busso et al. 2008): 5 dyadic sessions, 10 actors, scripted and improvised dialogs."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from types import MappingProxyType

from nas.data.corpora import Corpus, CorpusReader
from nas.data.selection import Selection
from nas.data.types import FileProblem, Utterance
from nas.errors import DataError

_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\s+(\S+)\s+(\S+)\s+\[.*\]\s*$")
_TURN = re.compile(r"^Ses(\d{2})[FM]_.+_([FM])\d{3}$")
_LABELS = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "sad": "sad",
    "ang": "angry",
    "fru": "frustrated",
    "sur": "surprised",
    "fea": "fearful",
    "dis": "disgust",
    "oth": "other",
}
NO_AGREEMENT = "xxx"

# The usual 4-class benchmark: improvised dialogs only, excited merged into happy.
IEMOCAP_4CLASS_IMPROVISED = Selection(
    classes=("neutral", "happy", "sad", "angry"),
    label_map=MappingProxyType({"excited": "happy"}),
    meta=MappingProxyType({"improvised": "true"}),
)


class IemocapReader(CorpusReader):
    """Reads the label files of `IEMOCAP_full_release` and the sentence audio they name.

    Layout (the root holds `Session1` .. `Session5`; the folder above
    `IEMOCAP_full_release` is accepted too):

        SessionN/dialog/EmoEvaluation/<dialog>.txt    one line per turn:
            [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
        SessionN/sentences/wav/<dialog>/<turn>.wav

    The speaker of a turn is its session plus the sex letter that starts the turn's last
    part (`Ses01F_impro01_M003` is spoken by `Ses01M`: the letter after `Ses01` only says
    who wore the motion-capture markers). Labels neu, hap, exc, sad, ang, fru, sur, fea,
    dis, oth map to the canonical names; `xxx` (annotators did not agree) is left out and
    counted in `Corpus.excluded`. Meta: `dialog`, `improvised` ("true" for `impro`
    dialogs), `start`, `end` (seconds in the dialog).
    """

    name = "iemocap"
    layout = (
        "SessionN/dialog/EmoEvaluation/<dialog>.txt label files and "
        "SessionN/sentences/wav/<dialog>/<turn>.wav (the IEMOCAP_full_release folder)"
    )

    def parse(self, root: Path) -> Corpus:
        if not any(root.glob("Session*")) and (root / "IEMOCAP_full_release").is_dir():
            root = root / "IEMOCAP_full_release"
        label_files = sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt"))
        if not label_files:
            raise DataError(f"{self.name}: no label file found under {root}; expected layout: {self.layout}")
        corpus = Corpus([], [], sources=label_files)
        excluded: Counter[str] = Counter()
        for label_file in label_files:
            _read_label_file(label_file, corpus, excluded)
        corpus.excluded = dict(excluded)
        return corpus


def _read_label_file(label_file: Path, corpus: Corpus, excluded: Counter[str]) -> None:
    """Add the turns of one `EmoEvaluation/<dialog>.txt` to `corpus`."""
    session_dir = label_file.parents[2]
    lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.startswith("["):
            continue  # headers, per-annotator lines and blank lines
        match = _LINE.match(line)
        if match is None:
            corpus.problems.append(
                FileProblem(label_file, f"line {number} is not `[start - end] turn label [v, a, d]`")
            )
            continue
        start, end, turn, code = match.groups()
        dialog = turn.rsplit("_", 1)[0]
        audio = session_dir / "sentences" / "wav" / dialog / f"{turn}.wav"
        turn_match = _TURN.match(turn)
        if code == NO_AGREEMENT:
            excluded[f"{NO_AGREEMENT} (annotators did not agree)"] += 1
        elif turn_match is None:
            reason = f"turn name {turn!r} (line {number} of {label_file.name}) does not parse"
            corpus.problems.append(FileProblem(audio, reason))
        elif code not in _LABELS:
            valid = ", ".join([*_LABELS, NO_AGREEMENT])
            corpus.problems.append(FileProblem(audio, f"label {code!r} is not an IEMOCAP label ({valid})"))
        elif not audio.is_file():
            corpus.problems.append(FileProblem(audio, f"audio listed in {label_file.name} is missing"))
        else:
            session_number, sex = turn_match.groups()
            corpus.utterances.append(
                Utterance(
                    path=audio,
                    label=_LABELS[code],
                    speaker=f"Ses{session_number}{sex}",
                    gender="female" if sex == "F" else "male",
                    session=session_dir.name,
                    meta={
                        "dialog": dialog,
                        "improvised": "true" if "impro" in dialog else "false",
                        "start": start,
                        "end": end,
                    },
                )
            )
