"""Kept corpus listings (nas.data.listing): the same listing as a fresh read, and every change on disk seen.

Each test counts the reads that reach the reader, so "seen" means read again, and a step that expects the
listing to be kept first waits until the corpus has settled (a few tens of ms with the short settle time
used here); the listing returned is always compared with an uncached read of the same corpus.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from nas.data.corpora import Corpus, read_corpus
from nas.data.listing import SETTLE_NS, CorpusListings
from tests.conftest import link_actors
from tests.data.test_readers import make_iemocap, touch

SETTLE_S = 0.02


class CountingReads:
    """`read_corpus`, counting the reads that reach it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, name: str, root: Path) -> Corpus:
        self.count += 1
        return read_corpus(name, root)


def listings() -> tuple[CorpusListings, CountingReads]:
    reads = CountingReads()
    return CorpusListings(read=reads, settle_ns=int(SETTLE_S * 1e9)), reads


def settle() -> None:
    """Wait until what a test just changed lies beyond the settle time (timestamps lag the clock, never lead)."""
    time.sleep(2.5 * SETTLE_S)


def as_read(listing: Corpus, name: str, root: Path) -> Corpus:
    """`listing`, after asserting that it is what an uncached read of the corpus gives now."""
    fresh = read_corpus(name, root)
    assert listing.utterances == fresh.utterances
    assert listing.problems == fresh.problems
    assert listing.excluded == fresh.excluded
    return listing


def kept(cache: CorpusListings, reads: CountingReads, name: str, root: Path) -> Corpus:
    """The listing, read once more after the corpus settled and then kept: a second call does not read."""
    settle()
    first = cache.read(name, root)
    before = reads.count
    assert cache.read(name, root).utterances == first.utterances
    assert reads.count == before, "a settled, unchanged corpus is read once"
    return as_read(first, name, root)


def names(corpus: Corpus) -> set[str]:
    return {u.path.name for u in corpus.utterances}


@pytest.fixture
def ravdess_copy(tmp_path: Path, ravdess_root: Path) -> Path:
    return link_actors(tmp_path / "ravdess", ravdess_root, [1, 2, 3])


def test_a_kept_listing_is_what_an_uncached_read_gives(ravdess_copy: Path, tmp_path: Path) -> None:
    cache, reads = listings()
    iemocap = make_iemocap(tmp_path / "iemocap")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,speaker\n" + "".join(f"{p},sad,s1\n" for p in sorted(ravdess_copy.rglob("*"))))
    for name, root in (("ravdess", ravdess_copy), ("iemocap", iemocap), ("csv", manifest)):
        listing = kept(cache, reads, name, root)
        assert listing.utterances and (name != "iemocap" or listing.excluded)
    assert reads.count == 3


def test_a_file_added_removed_or_renamed_is_seen(ravdess_copy: Path, ravdess_root: Path) -> None:
    cache, reads = listings()
    actor = ravdess_copy / "Actor_01"
    start = names(kept(cache, reads, "ravdess", ravdess_copy))

    extra = next((ravdess_root / "Actor_04").glob("*.flac"))
    (actor / extra.name).symlink_to(extra)
    assert names(as_read(cache.read("ravdess", ravdess_copy), "ravdess", ravdess_copy)) == start | {extra.name}

    kept(cache, reads, "ravdess", ravdess_copy)
    removed = sorted(actor.iterdir())[0]
    removed.unlink()
    assert removed.name not in names(as_read(cache.read("ravdess", ravdess_copy), "ravdess", ravdess_copy))

    kept(cache, reads, "ravdess", ravdess_copy)
    renamed = sorted(actor.iterdir())[0]
    renamed.rename(actor / f"x{renamed.name}")  # no longer a RAVDESS name: a problem now, not an utterance
    listing = as_read(cache.read("ravdess", ravdess_copy), "ravdess", ravdess_copy)
    assert renamed.name not in names(listing)
    assert f"x{renamed.name}" in {p.path.name for p in listing.problems}

    kept(cache, reads, "ravdess", ravdess_copy)
    shutil.rmtree(ravdess_copy / "Actor_03")  # a whole speaker
    listing = as_read(cache.read("ravdess", ravdess_copy), "ravdess", ravdess_copy)
    assert "Actor_03" not in {u.speaker for u in listing.utterances}


def test_a_new_folder_deep_in_the_tree_is_seen(ravdess_copy: Path, ravdess_root: Path) -> None:
    cache, reads = listings()
    kept(cache, reads, "ravdess", ravdess_copy)
    nested = ravdess_copy / "more" / "Actor_04"
    nested.mkdir(parents=True)
    kept(cache, reads, "ravdess", ravdess_copy)
    for src in (ravdess_root / "Actor_04").glob("*.flac"):
        (nested / src.name).symlink_to(src)  # changes only `nested`, a folder the first read saw empty
    listing = as_read(cache.read("ravdess", ravdess_copy), "ravdess", ravdess_copy)
    assert "Actor_04" in {u.speaker for u in listing.utterances}


def test_an_edited_label_file_is_seen_though_its_folder_is_unchanged(tmp_path: Path) -> None:
    cache, reads = listings()
    root = make_iemocap(tmp_path)
    labels = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_script01_1.txt"
    kept(cache, reads, "iemocap", root)
    folder_mtime = labels.parent.stat().st_mtime_ns

    labels.write_text(labels.read_text().replace("\tsad\t", "\tneu\t"))  # same size, same folder
    assert labels.parent.stat().st_mtime_ns == folder_mtime
    listing = as_read(cache.read("iemocap", root), "iemocap", root)
    assert {(u.path.name, u.label) for u in listing.utterances} >= {("Ses02M_script01_1_F000.wav", "neutral")}


def test_a_table_that_appears_beside_the_root_is_seen(tmp_path: Path) -> None:
    cache, reads = listings()
    touch(tmp_path, "AudioWAV/1001_DFA_SAD_XX.wav")
    root = tmp_path / "AudioWAV"
    assert kept(cache, reads, "crema-d", root).utterances[0].gender is None
    (tmp_path / "VideoDemographics.csv").write_text("ActorID,Age,Sex\n1001,51,Male\n")
    assert as_read(cache.read("crema-d", root), "crema-d", root).utterances[0].gender == "male"


def test_a_symlink_whose_target_vanishes_is_seen(ravdess_copy: Path, tmp_path: Path) -> None:
    cache, reads = listings()
    target = tmp_path / "elsewhere" / "03-01-04-01-01-01-20.flac"
    touch(target.parent, target.name)
    (ravdess_copy / "Actor_02" / target.name).symlink_to(target)
    assert target.name in names(kept(cache, reads, "ravdess", ravdess_copy))

    target.unlink()  # the link's folder is untouched; only what the link resolves to is gone
    assert target.name not in names(as_read(cache.read("ravdess", ravdess_copy), "ravdess", ravdess_copy))


def test_a_corpus_changed_just_before_a_read_is_read_again_until_it_settles(ravdess_copy: Path) -> None:
    reads = CountingReads()
    cache = CorpusListings(read=reads)  # the service's settle time: the copy was made just now
    assert SETTLE_NS >= 1_000_000_000
    cache.read("ravdess", ravdess_copy)
    cache.read("ravdess", ravdess_copy)
    assert reads.count == 2


def test_a_caller_changing_its_listing_does_not_change_the_kept_one(ravdess_copy: Path) -> None:
    cache, reads = listings()
    listing = kept(cache, reads, "ravdess", ravdess_copy)
    count = len(listing.utterances)
    listing.utterances.clear()
    listing.excluded["by the caller"] = 1
    again = cache.read("ravdess", ravdess_copy)
    assert len(again.utterances) == count
    as_read(again, "ravdess", ravdess_copy)


def test_a_burst_of_reads_of_a_new_corpus_reads_it_once(ravdess_copy: Path) -> None:
    cache, reads = listings()
    settle()
    results: list[Corpus] = []
    threads = [threading.Thread(target=lambda: results.append(cache.read("ravdess", ravdess_copy))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reads.count == 1
    assert all(r.utterances == results[0].utterances for r in results) and len(results) == 8


def test_only_the_last_capacity_corpora_are_kept(tmp_path: Path, ravdess_root: Path) -> None:
    reads = CountingReads()
    cache = CorpusListings(capacity=1, read=reads, settle_ns=int(SETTLE_S * 1e9))
    first = link_actors(tmp_path / "a", ravdess_root, [1, 2])
    second = link_actors(tmp_path / "b", ravdess_root, [1, 2])
    settle()
    for root in (first, first, second, second, first):
        cache.read("ravdess", root)
    assert reads.count == 3
