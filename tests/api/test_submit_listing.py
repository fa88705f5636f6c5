"""POST /searches reads a kept corpus listing, and the next submission sees any change made on disk since.

The controller's listings are swapped for ones that count their reads and settle in tens of ms
(tests/data/test_listing.py), so each test shows a listing was kept before it changes the corpus.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.api import (  # noqa: F401 - the fixtures register by importing them
    assert_error,
    client_fixture,
    field_locs,
    search_body,
    settings_fixture,
)
from tests.conftest import link_actors
from tests.data.test_listing import CountingReads, listings, settle
from tests.data.test_readers import touch


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> CountingReads:
    cache, counting = listings()
    monkeypatch.setattr("api.routes.searches.corpus_listings", cache)
    return counting


def submit_kept(client, body: dict, reads: CountingReads) -> None:
    """Two submissions of `body` after the corpus settled, both queued: the second reads no corpus."""
    settle()
    first = client.post("/searches", json=body)
    assert first.status_code == 201, first.text
    count = reads.count
    second = client.post("/searches", json=body)
    assert second.status_code == 201, second.text
    assert reads.count == count


def test_speakers_added_removed_or_renamed_away_are_seen(client, ravdess_root, tmp_path, reads):
    corpus = link_actors(tmp_path / "roots" / "ravdess", ravdess_root, [1, 2, 3, 4])
    body = search_body(corpus, folds={"n_folds": 4, "only": [0]})
    submit_kept(client, body, reads)

    shutil.rmtree(corpus / "Actor_04")
    error = assert_error(client.post("/searches", json=body), 422, "invalid_config")
    assert field_locs(error) == [["body", "folds", "n_folds"]] and "the corpus has 3" in error["message"]

    link_actors(corpus, ravdess_root, [5])
    submit_kept(client, body, reads)

    for path in (corpus / "Actor_05").iterdir():
        path.rename(path.with_name(f"x{path.name}"))  # no longer RAVDESS names: actor 05 is gone
    error = assert_error(client.post("/searches", json=body), 422, "invalid_config")
    assert "the corpus has 3" in error["message"]


def test_a_link_out_of_the_data_roots_added_to_a_kept_corpus_is_refused(client, ravdess_root, tmp_path, reads):
    corpus = link_actors(tmp_path / "roots" / "ravdess", ravdess_root, [1, 2, 3, 4])
    body = search_body(corpus, folds={"n_folds": 4, "only": [0]})
    del body["corpus"]["classes"]  # every class: each folder's 60 files are checked with one listing of it
    submit_kept(client, body, reads)

    outside = tmp_path / "outside" / "03-01-04-01-01-01-01.flac"
    touch(outside.parent, outside.name)
    (corpus / "Actor_01" / "03-01-04-01-01-01-01.flac").unlink()
    (corpus / "Actor_01" / outside.name).symlink_to(outside)  # one of the folder's 60 links, now leading out
    error = assert_error(client.post("/searches", json=body), 403, "forbidden_path")
    assert "1 of the corpus's" in error["message"] and outside.name in error["message"]


def iemocap(root: Path) -> Path:
    """Four speakers in two sessions with 12 neutral and 12 happy turns each; Session1's speakers also have
    12 sad turns each, all in one label file."""
    lines: dict[Path, list[str]] = {}
    for session in (1, 2):
        for sex in "FM":
            for kind, (code, dialog) in enumerate((("neu", "impro01"), ("hap", "impro01"), ("sad", "impro02"))):
                if code == "sad" and session == 2:
                    continue
                folder = f"Ses{session:02d}F_{dialog}"
                labels = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{folder}.txt"
                for number in range(12):
                    turn = f"{folder}_{sex}{kind * 12 + number:03d}"
                    lines.setdefault(labels, []).append(f"[1.0 - 2.0]\t{turn}\t{code}\t[2.5, 2.5, 2.5]\n")
                    touch(root / f"Session{session}" / "sentences" / "wav" / folder, f"{turn}.wav")
    for labels, text in lines.items():
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text("".join(text))
    return root


def test_an_edited_label_file_is_seen(client, ravdess_root, tmp_path, reads):
    corpus = iemocap(tmp_path / "roots" / "iemocap")
    body = search_body(corpus, folds={"n_folds": 2, "only": [0]})
    body["corpus"]["name"] = "iemocap"
    submit_kept(client, body, reads)

    labels = corpus / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro02.txt"
    labels.write_text(labels.read_text().replace("\tsad\t", "\txxx\t"))  # same size: annotators disagreed
    error = assert_error(client.post("/searches", json=body), 422, "invalid_data")
    assert "class 'sad' does not occur" in error["message"]
