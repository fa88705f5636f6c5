"""Utterances -> feature arrays, computed once per (file content, FeatureSpec).

Maps are (N, 1, F, T); frame sequences are (N, T, D), zero-padded, with their true lengths.

A search runs many trials over the same corpus, and several searches share corpora, so
features are cached on disk under the sha256 of each file's bytes and the spec's key:
renaming, copying or touching a file costs nothing, editing it or changing the spec
recomputes. Augmented copies of training utterances (nas.augment.waveform) go through the
same pool and cache, in a folder per copy inside the spec's. Scaling is not applied here:
it must be fitted per fold on training speakers only (see nas.features.scaling).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import threadpoolctl
from tqdm import tqdm

from nas.augment.waveform import AudioAugment, augment_signal, copy_seed
from nas.data.types import FileProblem, Utterance
from nas.errors import ConfigError
from nas.features.audio import AudioError, load_audio, pad_or_truncate, read_bytes
from nas.features.spec import Chroma, FeatureSpec, LogMel, Mfcc

# A fresh worker spends ~2 s importing scipy and numba for librosa, about what one core
# needs to extract 300 files (~7 ms each); with fewer files per worker the pool costs more
# than it saves.
_MIN_FILES_PER_WORKER = 256

# librosa.feature.delta's default Savitzky-Golay window.
_DELTA_WIDTH = 9

# Called as on_progress(what, files done, files in all) after each file, e.g. ("features", 360, 720).
OnProgress = Callable[[str, int, int], None]


@dataclass
class FeatureSet:
    """Features of the utterances that could be used, and why the others could not."""

    x: np.ndarray  # (N, 1, F, T) map or (N, T, D) padded frames, float32, one row per kept utterance, in input order
    kept: list[int]  # indices into the input utterances, one per row of x
    problems: list[FileProblem] = field(default_factory=list)
    from_cache: int = 0  # rows read from the cache rather than computed
    lengths: np.ndarray | None = None  # (N,) int64 true frame counts; frames layout only

    @classmethod
    def of_rows(
        cls,
        x: np.ndarray,
        ok: np.ndarray,
        problems: dict[int, FileProblem],
        from_cache: int,
        lengths: np.ndarray | None,
    ) -> FeatureSet:
        """The rows of `x` (and `lengths`) that could be used (`ok`), and the problems in input order."""
        return cls(
            x=x if ok.all() else x[ok],
            kept=np.flatnonzero(ok).tolist(),
            problems=[problems[i] for i in sorted(problems)],
            from_cache=from_cache,
            lengths=None if lengths is None else lengths if ok.all() else lengths[ok],
        )


def compute_features(signal: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """One mono signal at spec.sample_rate -> its (1, F, T) float32 map, or its unpadded (T_i, D) frames.

    All frontends share one STFT (n_fft, hop_length, centred frames) so their frames line
    up and can be stacked along the feature axis. SSL frames come from `nas.features.ssl`.
    """
    assert spec.ssl is None, "SSL frames are computed in batches by nas.features.ssl, not per signal"
    n_frames = spec.raw_shape[1]
    deltas = any(isinstance(f, Mfcc) and f.deltas for f in spec.frontends)
    if deltas and n_frames < _DELTA_WIDTH:
        raise ConfigError(
            f"MFCC deltas need at least {_DELTA_WIDTH} frames but duration_s={spec.duration_s} "
            f"gives {n_frames}; raise duration_s, lower hop_length or set deltas=0"
        )
    signal = np.asarray(signal, dtype=np.float32)
    if spec.layout == "frames":
        # Cut, never pad: padding is masked per batch instead. Deltas still need a few frames.
        shortest = (_DELTA_WIDTH - 1) * spec.hop_length if deltas else 1
        signal = pad_or_truncate(signal, max(shortest, min(len(signal), spec.n_samples)))
    else:
        signal = pad_or_truncate(signal, spec.n_samples)
    stft = librosa.stft(signal, n_fft=spec.n_fft, hop_length=spec.hop_length, window=spec.window, center=True)
    power = np.abs(stft) ** 2
    log_mels: dict[int, np.ndarray] = {}

    def log_mel(n_mels: int) -> np.ndarray:
        if n_mels not in log_mels:
            mel = librosa.feature.melspectrogram(S=power, sr=spec.sample_rate, n_mels=n_mels)
            log_mels[n_mels] = librosa.power_to_db(mel)
        return log_mels[n_mels]

    blocks: list[np.ndarray] = []
    for frontend in spec.frontends:
        if isinstance(frontend, Mfcc):
            mfcc = librosa.feature.mfcc(S=log_mel(frontend.mel_bands), n_mfcc=frontend.n_mfcc)
            blocks.append(mfcc)
            blocks.extend(librosa.feature.delta(mfcc, order=order) for order in range(1, frontend.deltas + 1))
        elif isinstance(frontend, LogMel):
            blocks.append(log_mel(frontend.n_mels))
        elif isinstance(frontend, Chroma):
            blocks.append(librosa.feature.chroma_stft(S=power, sr=spec.sample_rate, n_chroma=frontend.n_chroma))
    features = np.concatenate(blocks, axis=0)
    if spec.layout == "frames":
        return np.ascontiguousarray(features.T, dtype=np.float32)  # (F, T_i) -> (T_i, D); cut to max_frames when placed
    assert features.shape == spec.raw_shape, f"frontends gave {features.shape}, spec expects {spec.raw_shape}"
    if spec.pool_to is not None:
        features = adaptive_max_pool(features, spec.pool_to)
    return features[np.newaxis].astype(np.float32, copy=False)


def signal_features(signal: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """One new signal's features under any spec: `compute_features`, or the SSL model's frames."""
    if spec.ssl is not None:
        from nas.features.ssl import ssl_frames  # torch and transformers only when SSL frames are asked for

        return ssl_frames(signal, spec)
    return compute_features(signal, spec)


def adaptive_max_pool(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Max-pool a (F, T) map to `size` with torch.nn.AdaptiveMaxPool2d's windows.

    Window i along an axis of length n covers [floor(i*n/out), ceil((i+1)*n/out)), so the
    windows tile the whole map (overlapping by at most one cell) and no frame is dropped.
    """
    rows = _adaptive_windows(x.shape[0], size[0])
    cols = _adaptive_windows(x.shape[1], size[1])
    # A max over a rectangle is a max over rows of maxima over columns.
    return x[rows].max(axis=1)[:, cols].max(axis=2)


def _adaptive_windows(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, width) indices of each adaptive window; short windows repeat their last index."""
    i = np.arange(n_out)
    starts = i * n_in // n_out
    ends = -(-(i + 1) * n_in // n_out)
    width = int((ends - starts).max())
    return np.minimum(starts[:, None] + np.arange(width), ends[:, None] - 1)


def default_cache_dir() -> Path:
    """$SERNAS_CACHE_DIR, else the user's cache directory (XDG), so every run shares one cache."""
    if configured := os.environ.get("SERNAS_CACHE_DIR"):
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sernas" / "features"


def extract(
    utterances: Sequence[Utterance],
    spec: FeatureSpec,
    cache_dir: Path | None,
    workers: int | None = None,
    progress: bool = True,
    on_progress: OnProgress | None = None,
) -> FeatureSet:
    """Features for every usable utterance, reading what the cache has and computing the rest.

    Files that cannot be used (unreadable, corrupt, empty, silent) are listed in
    `problems` with the reason and left out of `x`; they are never cached. `cache_dir`
    None disables the cache. `workers` None uses every available core once there are
    enough files to repay starting the processes; 1 computes in this process. Workers are
    fresh processes that re-import the caller's main module, so scripts must keep their
    entry point under `if __name__ == "__main__":`. `progress` shows a bar on the terminal;
    `on_progress` hears of every file (SSL frames: not yet).
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if spec.ssl is not None:
        from nas.features.ssl import extract_ssl  # torch and transformers only when SSL frames are asked for

        return extract_ssl(utterances, spec, cache_dir, progress=progress)
    spec_dir = None if cache_dir is None else Path(cache_dir) / spec.cache_key()
    return _extract(utterances, spec, spec_dir, workers, progress, None, on_progress)


def extract_augmented(
    utterances: Sequence[Utterance],
    spec: FeatureSpec,
    augment: AudioAugment,
    seed: int,
    cache_dir: Path | None,
    workers: int | None = None,
    progress: bool = True,
    on_progress: OnProgress | None = None,
) -> list[FeatureSet]:
    """The features of `augment.copies` augmented copies of every utterance, one FeatureSet per copy.

    Same cache and process pool as `extract`; a copy's entry is keyed by the file's content, the feature
    spec, the augmentation settings, `seed` and the copy index, and each copy is seeded from the seed,
    the file's content digest and the copy index, so it is reproducible and computed once.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if spec.ssl is not None:
        raise ConfigError(
            "augment: waveform augmentation is not supported with SSL frames (features.ssl) yet; "
            "leave augment unset or use spectral frontends"
        )
    copies = []
    for copy in range(augment.copies):
        augmentation = Augmentation(augment, seed, copy)
        copy_dir = None if cache_dir is None else Path(cache_dir) / spec.cache_key() / augmentation.folder()
        copies.append(_extract(utterances, spec, copy_dir, workers, progress, augmentation, on_progress))
    return copies


@dataclass(frozen=True)
class Augmentation:
    """Which augmented copy of each file to compute: copy `copy` of `settings` under the search's `seed`."""

    settings: AudioAugment
    seed: int
    copy: int

    def folder(self) -> str:
        """The copy's cache folder, inside its feature spec's."""
        return f"augment-{self.settings.cache_key()}-seed{self.seed}-copy{self.copy}"


def _extract(
    utterances: Sequence[Utterance],
    spec: FeatureSpec,
    spec_dir: Path | None,
    workers: int | None,
    progress: bool,
    augmentation: Augmentation | None,
    on_progress: OnProgress | None,
) -> FeatureSet:
    n = len(utterances)
    x = np.zeros((n, *spec.output_shape), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    problems: dict[int, FileProblem] = {}
    from_cache = 0
    desc = "features" if augmentation is None else f"augmented copy {augmentation.copy + 1}"
    done = 0
    with tqdm(total=n, desc=desc, unit="file", disable=not progress) as bar:

        def one_done() -> None:
            nonlocal done
            done += 1
            bar.update()
            if on_progress is not None:
                on_progress(desc, done, n)

        todo: list[tuple[int, Path]] = []
        for index, utterance in enumerate(utterances):
            cached = None if spec_dir is None else cached_features(spec_dir, Path(utterance.path), spec)
            if cached is None:
                todo.append((index, Path(utterance.path)))
                continue
            lengths[index], ok[index] = place(x, index, cached), True
            from_cache += 1
            one_done()
        if todo and spec_dir is not None:
            describe_cache(spec_dir, spec if augmentation is None else augmentation)
        with closing(_compute(todo, spec, spec_dir, workers, augmentation)) as results:
            for index, features, reason in results:
                if features is None:
                    problems[index] = FileProblem(Path(utterances[index].path), reason)
                else:
                    lengths[index], ok[index] = place(x, index, features), True
                one_done()
    return FeatureSet.of_rows(x, ok, problems, from_cache, lengths if spec.layout == "frames" else None)


def place(x: np.ndarray, index: int, features: np.ndarray) -> int:
    """Write one example into row `index` of `x`; frames are cut to x's T and the rest stays zero.

    Returns the example's true length in frames (maps: their fixed T)."""
    if x.ndim == 3:  # (N, T, D) frames
        length = min(len(features), x.shape[1])
        x[index, :length] = features[:length]
        return length
    x[index] = features
    return x.shape[-1]


def _compute(
    todo: list[tuple[int, Path]],
    spec: FeatureSpec,
    spec_dir: Path | None,
    workers: int | None,
    augmentation: Augmentation | None = None,
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """(index, features or None, problem or None) for each file in `todo`, in order."""
    work = functools.partial(_extract_file, spec=spec, spec_dir=spec_dir, augmentation=augmentation)
    n_workers = _n_workers(len(todo), workers)
    if n_workers <= 1:
        # One BLAS thread, as in the workers: features are then bit-identical however computed.
        with threadpoolctl.threadpool_limits(1):
            yield from map(work, todo)
        return
    # forkserver/spawn rather than fork: the caller may hold torch or Ray threads, and
    # forking a multithreaded process can deadlock the child.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker)
    try:
        yield from pool.map(work, todo, chunksize=max(1, len(todo) // (n_workers * 8)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _n_workers(n_todo: int, workers: int | None) -> int:
    if workers is not None:
        return min(workers, n_todo)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, n_todo // _MIN_FILES_PER_WORKER))


def _init_worker() -> None:
    """One BLAS/OpenMP/torch thread per worker: the pool already puts one worker on each core."""
    threadpoolctl.threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    # Ctrl-C reaches the whole process group; the parent cancels the pool, so workers
    # should not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _extract_file(
    item: tuple[int, Path], spec: FeatureSpec, spec_dir: Path | None, augmentation: Augmentation | None = None
) -> tuple[int, np.ndarray | None, str | None]:
    index, path = item
    try:
        data = read_bytes(path)
        audio = load_audio(path, spec.sample_rate, data=data)
        if augmentation is not None:
            seed = copy_seed(augmentation.seed, hashlib.sha256(data).hexdigest(), augmentation.copy)
            audio = augment_signal(audio, spec.sample_rate, augmentation.settings, seed)
        features = compute_features(audio, spec)
    except AudioError as exc:
        return index, None, exc.reason
    if spec_dir is not None:
        # Keyed by the bytes actually decoded, so a file edited since the lookup is cached correctly.
        store_features(spec_dir, data, features)
    return index, features, None


def store_features(spec_dir: Path, data: bytes, features: np.ndarray) -> None:
    """Cache the features of a file whose content is `data`."""
    _atomic_write(_entry(spec_dir, hashlib.sha256(data).hexdigest()), _npy_bytes(features))


def _entry(spec_dir: Path, digest: str) -> Path:
    # Two-hex-digit fan-out keeps directories small for corpora of 100k+ files.
    return spec_dir / digest[:2] / f"{digest}.npy"


def cached_features(spec_dir: Path, path: Path, spec: FeatureSpec) -> np.ndarray | None:
    """The cached features of `path`'s content, or None when they must be computed."""
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        features = np.load(_entry(spec_dir, digest), allow_pickle=False)
    # Missing files are reported by the worker that tries to decode them; a missing or
    # damaged entry (e.g. written by an older version) is recomputed and replaced.
    except (OSError, ValueError, EOFError):
        return None
    if spec.layout == "frames":
        fits = features.ndim == 2 and features.shape[1] == spec.n_features
    else:
        fits = features.shape == spec.output_shape
    return features if fits and features.dtype == np.float32 else None


def describe_cache(spec_dir: Path, spec: FeatureSpec | Augmentation) -> None:
    """Write the spec (or an augmented copy's settings) beside its entries so a cache directory can be traced
    back to its settings."""
    target = spec_dir / "spec.json"
    if target.exists():
        return
    if isinstance(spec, Augmentation):
        settings = {"augment": spec.settings.model_dump(mode="json"), "seed": spec.seed, "copy": spec.copy}
        _atomic_write(target, json.dumps(settings, indent=2).encode())
    else:
        _atomic_write(target, spec.model_dump_json(indent=2).encode())


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write via a temp file and rename, so concurrent runs never read a half-written entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
