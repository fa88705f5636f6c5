"""Corpus listings read once and reused while nothing they were read from has changed on disk.

Reading a corpus (`nas.data.corpora.read_corpus`) walks its tree and parses every name (and, for some
corpora, label files): 30-40 ms for RAVDESS's 720 files, most of a submission's time. The controller
reads the same few corpora for every submission, so `CorpusListings` keeps each listing and reuses it
while a stat of everything it depends on shows no change. What is watched, and why:

- every folder under the root, through symlinked folders too (a glob such as IEMOCAP's follows them):
  adding, removing or renaming an entry changes its folder's mtime, so new subfolders are seen too;
- every symlink under the root, stat'ed through the link: a target appearing, vanishing or turning
  into another kind of file changes what the link resolves to, not the link's folder;
- the root itself (a folder, or a manifest file), and `Corpus.sources` with their folders: label files,
  manifests, tables, whose edits change their own mtime, size and ctime but not their folder's mtime
  (folder mtimes alone would miss an edited IEMOCAP label file);
- for a file listed outside the root's tree (a manifest may point anywhere): its folder, and the file
  itself when it is a symlink.

A stamp is (device, inode, mode, size, mtime, ctime), or "missing", so a path that now resolves to another
file (a folder swapped by `mv`, a re-pointed symlink above it) differs too. Audio content is not watched: a
listing holds names and labels, never audio. Checking costs one stat per watched path (13 for RAVDESS)
where a stat walk of every file would cost most of what the read costs.

The root's tree is stamped before the read, so a change during the read shows at the next check. File
system timestamps are only as fine as the kernel's clock tick, so a second change in the same tick as an
earlier one leaves them as they were; a listing is therefore kept only when every watched path last
changed (mtime or ctime) at least `SETTLE_NS` before the read began: any later change moves a timestamp
to "now", which differs. A corpus still being written is read again on each use until it has settled.
Left open: a file outside the root's tree (a manifest's) whose folder is swapped, during the read itself,
for an older one with the same names.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from nas.data.corpora import Corpus, read_corpus


class Stamp(NamedTuple):
    """What `os.stat` says of a path that any change to it, or to what it resolves to, would alter."""

    device: int
    inode: int
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int


Stamps = dict[str, Stamp | None]  # None: the path cannot be stat'ed (missing, or a dangling link)

# Longer than a file system's timestamp granularity (2 s on FAT) and a network file server's usual clock skew.
SETTLE_NS = 2_000_000_000


def _stamp(path: str) -> Stamp | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return _stamp_of(info)


def _stamp_of(info: os.stat_result) -> Stamp:
    return Stamp(info.st_dev, info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _tree_stamps(root: str) -> Stamps:
    """The stamps of `root`, of every folder under it (through symlinked folders, each folder once) and of
    every symlink in them, each folder stamped before it is listed."""
    stamps: Stamps = {root: _stamp(root)}
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:  # a symlink loop, or a second link to one folder
                continue
            entries = list(os.scandir(folder))
        except OSError:  # gone or unreadable: the stamp of the entry that led here shows when that changes
            continue
        seen.add((info.st_dev, info.st_ino))
        stamps[folder] = _stamp_of(info)
        for entry in entries:
            if entry.is_symlink():
                stamps[entry.path] = _stamp(entry.path)
            if entry.is_dir():  # follows symlinks
                pending.append(entry.path)
    return stamps


def _read_dependencies(corpus: Corpus, tree: Stamps) -> set[str]:
    """What `corpus`'s listing depends on beyond `tree` (`_tree_stamps` of its root): its sources and their
    folders, and for a file listed outside the tree, its folder, and the file itself when it is a symlink."""
    paths = {os.path.abspath(source) for source in corpus.sources}
    paths |= {os.path.dirname(path) for path in paths}
    for listed in [u.path for u in corpus.utterances] + [p.path for p in corpus.problems]:
        name = os.path.abspath(listed)
        folder = os.path.dirname(name)
        if folder not in tree:
            paths.add(folder)
            if os.path.islink(name):
                paths.add(name)
    return paths - tree.keys()


@dataclass(frozen=True)
class _Listing:
    corpus: Corpus
    stamps: Stamps

    def is_current(self) -> bool:
        return all(_stamp(path) == recorded for path, recorded in self.stamps.items())


def _copy(corpus: Corpus) -> Corpus:
    """A copy whose lists a caller may change without changing the kept listing (utterances are frozen)."""
    return Corpus(list(corpus.utterances), list(corpus.problems), dict(corpus.excluded), list(corpus.sources))


class CorpusListings:
    """`read_corpus` with the listings of the last `capacity` (corpus name, root) pairs kept while current.

    Thread-safe: a kept listing is checked without a lock; a corpus not kept is read by one thread at a
    time per (name, root) (locks striped by key), so a burst of submissions of a new corpus reads it once.
    `settle_ns`: how long everything watched must have been still before a read for its listing to be kept.
    """

    def __init__(
        self,
        capacity: int = 16,
        read: Callable[[str, Path], Corpus] = read_corpus,
        settle_ns: int = SETTLE_NS,
    ) -> None:
        self._capacity = capacity
        self._read = read
        self._settle_ns = settle_ns
        self._listings: OrderedDict[tuple[str, str], _Listing] = OrderedDict()
        self._lock = threading.Lock()
        self._read_locks = [threading.Lock() for _ in range(16)]

    def read(self, name: str, root: Path) -> Corpus:
        """The listing of corpus `name` at `root`, as `read_corpus` would return it now."""
        top = os.path.abspath(os.path.expanduser(root))
        key = (name, top)
        kept = self._current(key)
        if kept is not None:
            return _copy(kept)
        with self._read_locks[hash(key) % len(self._read_locks)]:
            kept = self._current(key)  # another thread may have read it while this one waited
            if kept is not None:
                return _copy(kept)
            started_ns = time.time_ns()
            # The tree is stamped before the read, so a change during the read shows at the next check.
            stamps = _tree_stamps(top) if os.path.isdir(top) else {top: _stamp(top)}
            corpus = self._read(name, root)
            stamps |= {path: _stamp(path) for path in _read_dependencies(corpus, stamps)}
            if _settled(stamps, started_ns - self._settle_ns):
                self._keep(key, _Listing(_copy(corpus), stamps))
            return corpus

    def _current(self, key: tuple[str, str]) -> Corpus | None:
        with self._lock:
            listing = self._listings.get(key)
            if listing is not None:
                self._listings.move_to_end(key)
        return listing.corpus if listing is not None and listing.is_current() else None

    def _keep(self, key: tuple[str, str], listing: _Listing) -> None:
        with self._lock:
            self._listings[key] = listing
            self._listings.move_to_end(key)
            while len(self._listings) > self._capacity:
                self._listings.popitem(last=False)


def _settled(stamps: Stamps, before_ns: int) -> bool:
    """Whether every watched path last changed (content, entries or metadata) before `before_ns`."""
    return all(s is None or max(s.mtime_ns, s.ctime_ns) <= before_ns for s in stamps.values())
