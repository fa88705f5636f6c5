"""Frames of a frozen self-supervised speech model: DistilHuBERT as an input to the searched networks.

DistilHuBERT (Chang, Yang & Lee, "DistilHuBERT: speech representation learning by layer-wise
distillation of hidden-unit BERT", ICASSP 2022) keeps HuBERT-base's convolutional encoder (a 400-sample
receptive field and a 320-sample hop: 50 frames per second of 16 kHz audio) and two of its twelve
transformer layers, so it yields 768-d frames with a quarter of HuBERT-base's parameters (23.5M).
Ahmadianshalchi et al. (2026) search emotion-recognition networks on exactly these frames, 768-d at
50 Hz padded or cut to 300 frames (6 s of audio gives 299, zero-padded to 300):
`FeatureSpec(frontends=[Ssl()], layout="frames", duration_s=6, max_frames=300)` reproduces that input.

The model is never fine-tuned here: it is loaded once per process, frozen, and its frames are cached
on disk like every other feature (per file content, spec and model weights), so a search pays for the
transformer once per corpus, not once per trial. Nothing is downloaded at run time: the weights are a
transformers `HubertModel` saved with `save_pretrained` in a local directory.

Batching and normalisation. HuBERT-base and DistilHuBERT (`feat_extract_norm="group"`) were trained
without attention masks, and their first convolution group-normalises each channel over the whole
signal: zero padding shifts those statistics, and the unmasked self-attention then also attends to
the padded frames. A padded batch would therefore give an utterance different frames depending on
what it was batched with. So for such models only signals of exactly the same length are batched
(every utterance longer than `duration_s` is cut to the same length, so those batch well; the rest
run one at a time), and frames never depend on batch composition. Models with layer-normalised
convolutions (`feat_extract_norm="layer"`, e.g. HuBERT-large) are batched by similar length with an
attention mask, as transformers prescribes for them. Waveforms are standardised per utterance only
when the model's own feature extractor (`preprocessor_config.json`, `do_normalize`) says so; without
that file they are passed as decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import HubertModel
from transformers.utils import logging as transformers_logging

from nas.data.types import FileProblem, Utterance
from nas.errors import ConfigError, DataError
from nas.features.audio import AudioError, load_audio, read_bytes
from nas.features.extract import FeatureSet, cached_features, describe_cache, place, store_features
from nas.features.spec import SSL_HOP, FeatureSpec, Ssl

# The one place that names the environment variable holding the SSL model directories.
SSL_DIR_ENV = "SERNAS_SSL_DIR"

# The receptive field of HuBERT's convolutional encoder in samples; spec.raw_shape assumes it and SSL_HOP.
SSL_RECEPTIVE_FIELD = 400

_CONFIG = "config.json"
_PREPROCESSOR = "preprocessor_config.json"
# What save_pretrained writes for the weights: one safetensors file, or shards with an index
# (older checkpoints: pytorch_model.bin).
_WEIGHT_PATTERNS = (
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)

# Files decoded and computed between cache writes: bounds memory on big corpora, and is large enough
# that equal-length (cut) utterances find each other for batching.
_MIN_CHUNK = 64

# Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm's epsilon.
_NORM_EPS = 1e-7


def default_ssl_root() -> Path:
    """$SERNAS_SSL_DIR, else the user's cache directory (XDG), where model directories are looked up by name."""
    if configured := os.environ.get(SSL_DIR_ENV):
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sernas" / "ssl"


def ssl_model_dir(frontend: Ssl) -> Path:
    """Where `frontend`'s weights live: its `model_dir`, else <$SERNAS_SSL_DIR or ~/.cache/sernas/ssl>/<model>."""
    if frontend.model_dir is not None:
        return Path(frontend.model_dir).expanduser()
    return default_ssl_root() / frontend.model


@dataclass(eq=False)
class SslModel:
    """A frozen HubertModel on one device, with what is needed to turn signals into frames."""

    network: HubertModel
    path: Path
    device: torch.device
    digest: str  # short sha256 of the config, preprocessor and weight files (and transformers/torch versions)
    normalize: bool  # standardise each waveform first, as the model's feature extractor does
    masked: bool  # layer-norm encoder: batch with attention masks; group-norm: batch only equal lengths

    @property
    def n_layers(self) -> int:
        return int(self.network.config.num_hidden_layers)

    @property
    def dim(self) -> int:
        return int(self.network.config.hidden_size)

    def n_frames(self, n_samples: int) -> int:
        """Frames the convolutional encoder yields for `n_samples` (0 when shorter than its receptive field)."""
        n = n_samples
        for kernel, stride in zip(self.network.config.conv_kernel, self.network.config.conv_stride, strict=True):
            n = (n - kernel) // stride + 1
            if n < 1:
                return 0
        return n

    def frames(self, signals: Sequence[np.ndarray], layer: int | None = None, batch_size: int = 8) -> list[np.ndarray]:
        """(T_i, D) float32 frames of each 16 kHz signal, in input order: hidden_states[layer], or the last.

        Every signal must span the receptive field (n_frames > 0). Frames do not depend on which
        signals are passed together (see the module docstring for how batches are formed).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if layer is not None and not 0 <= layer <= self.n_layers:
            raise ConfigError(f"layer {layer} does not exist: {self.path} has hidden states 0..{self.n_layers}")
        lengths = [len(s) for s in signals]
        for i, n in enumerate(lengths):
            if self.n_frames(n) < 1:
                raise DataError(f"signal {i} has {n} samples, fewer than one {self.path.name} frame needs")
        out: list[np.ndarray | None] = [None] * len(signals)
        for batch in _batches(lengths, batch_size, self.masked):
            for i, frames in zip(batch, self._forward([signals[i] for i in batch], layer), strict=True):
                out[i] = frames
        return out  # type: ignore[return-value]  # every index is in exactly one batch

    @torch.inference_mode()
    def _forward(self, signals: list[np.ndarray], layer: int | None) -> list[np.ndarray]:
        lengths = [len(s) for s in signals]
        x = np.zeros((len(signals), max(lengths)), dtype=np.float32)
        for row, signal in enumerate(signals):
            x[row, : len(signal)] = _standardise(signal) if self.normalize else signal
        # Group-norm models are only given equal lengths, so no mask is needed (nor wanted: they never saw one).
        mask = torch.from_numpy(np.arange(x.shape[1]) < np.array(lengths)[:, None]).long() if self.masked else None
        output = self.network(
            torch.from_numpy(x).to(self.device),
            attention_mask=None if mask is None else mask.to(self.device),
            output_hidden_states=layer is not None,
        )
        # hidden_states[0] is the encoder's input (projected conv features + positional conv, normalised).
        hidden = output.last_hidden_state if layer is None else output.hidden_states[layer]
        hidden = hidden.float().cpu().numpy()
        return [np.ascontiguousarray(hidden[row, : self.n_frames(n)]) for row, n in enumerate(lengths)]


def _standardise(signal: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the utterance, as Wav2Vec2FeatureExtractor(do_normalize=True) does."""
    return ((signal - signal.mean()) / np.sqrt(signal.var() + _NORM_EPS)).astype(np.float32)


def _batches(lengths: Sequence[int], batch_size: int, masked: bool) -> Iterator[list[int]]:
    """Index batches, longest first (a batch that does not fit in memory fails at once).

    Masked models: sorted by length, so neighbours waste little padding. Unmasked (group-norm)
    models: only equal lengths share a batch, since padding would change their frames.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if masked:
        groups = [order]
    else:
        by_length: dict[int, list[int]] = defaultdict(list)
        for i in order:
            by_length[lengths[i]].append(i)
        groups = list(by_length.values())
    for group in groups:
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]


# (directory, device) -> (file signature, model): one load per process, redone when the files change.
_LOADED: dict[tuple[Path, str], tuple[tuple[tuple[str, int, int], ...], SslModel]] = {}
_LOADING = threading.Lock()


def load_ssl_model(frontend: Ssl, device: str | torch.device = "cpu") -> SslModel:
    """The frozen model `frontend` names, on `device`; loaded once per process and reused while its files are unchanged.

    Raises ConfigError saying where the weights were looked for and what to put there when they are
    missing or unusable, and when the model does not yield `frontend.dim`-wide frames or `frontend.layer`.
    """
    path = ssl_model_dir(frontend).resolve()
    device = torch.device(device)
    files = _model_files(path, frontend)
    signature = tuple((f.name, (s := f.stat()).st_size, s.st_mtime_ns) for f in files)
    with _LOADING:
        loaded = _LOADED.get((path, str(device)))
        if loaded is None or loaded[0] != signature:
            _LOADED[(path, str(device))] = loaded = signature, _load(path, files, device)
    model = loaded[1]
    if model.dim != frontend.dim:
        raise ConfigError(
            f"{path} yields {model.dim}-d frames (hidden_size) but the ssl frontend says dim {frontend.dim}: "
            f"set features.frontends[0].dim to {model.dim} or use a {frontend.dim}-d model"
        )
    if frontend.layer is not None and frontend.layer > model.n_layers:
        raise ConfigError(
            f"features.frontends[0].layer is {frontend.layer} but {path} has {model.n_layers} transformer layers: "
            f"choose 0..{model.n_layers} (0: before the first layer), or null for the last"
        )
    return model


def _model_files(path: Path, frontend: Ssl) -> list[Path]:
    """config.json, the optional preprocessor_config.json and the weight files, sorted; ConfigError if absent."""
    if frontend.model_dir is not None:
        chosen = "features.frontends[0].model_dir"
    elif os.environ.get(SSL_DIR_ENV):
        chosen = f"${SSL_DIR_ENV}/{frontend.model}"
    else:
        chosen = f"the default ~/.cache/sernas/ssl/{frontend.model} (${SSL_DIR_ENV} is not set)"
    weights = sorted({f for pattern in _WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file()})
    config = path / _CONFIG
    if not config.is_file() or not weights:
        found = (
            "no such directory" if not path.is_dir() else f"missing {_CONFIG if not config.is_file() else 'weights'}"
        )
        raise ConfigError(
            f"no {frontend.model} weights at {path} ({found}; directory from {chosen}). "
            f"Put a transformers HubertModel saved with save_pretrained there (config.json + model.safetensors, "
            f"e.g. ntu-spml/distilhubert), or name its directory with features.frontends[0].model_dir "
            f"or ${SSL_DIR_ENV} (which holds one folder per model, here {frontend.model}/). Nothing is downloaded."
        )
    preprocessor = [path / _PREPROCESSOR] if (path / _PREPROCESSOR).is_file() else []
    return sorted([config, *preprocessor, *weights])


def _load(path: Path, files: list[Path], device: torch.device) -> SslModel:
    config = _read_json(path / _CONFIG)
    if config.get("model_type") != "hubert":
        # A wav2vec2/WavLM checkpoint would "load" into a HubertModel with random weights in its place.
        raise ConfigError(f"{path / _CONFIG} describes a {config.get('model_type')!r} model, not a HubertModel")
    preprocessor = _read_json(path / _PREPROCESSOR) if (path / _PREPROCESSOR).is_file() else None
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # its per-tensor loading bar would interleave with ours
    try:
        network, info = HubertModel.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except Exception as exc:  # safetensors, torch and transformers each raise their own types for bad files
        raise ConfigError(f"cannot load the HubertModel in {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    # masked_spec_embed is used only for SpecAugment in training; any other missing tensor is random.
    missing = [k for k in info.get("missing_keys", ()) if "masked_spec_embed" not in k]
    if missing:
        raise ConfigError(f"{path} is missing {len(missing)} HubertModel weights (e.g. {sorted(missing)[0]})")
    hop, field = _conv_geometry(network.config.conv_kernel, network.config.conv_stride)
    if (hop, field) != (SSL_HOP, SSL_RECEPTIVE_FIELD):
        # FeatureSpec.raw_shape counts frames as (n - 400) // 320 + 1; another encoder would break that.
        raise ConfigError(
            f"{path}: its convolutional encoder has a {hop}-sample hop and a {field}-sample receptive field; "
            f"SSL features assume HuBERT's {SSL_HOP} and {SSL_RECEPTIVE_FIELD} (50 frames per second)"
        )
    network.eval().requires_grad_(False).to(device)
    return SslModel(
        network=network,
        path=path,
        device=device,
        digest=_digest(files),
        # Wav2Vec2FeatureExtractor's own default is do_normalize=True; without its file, pass audio as decoded.
        normalize=bool(preprocessor.get("do_normalize", True)) if preprocessor is not None else False,
        masked=network.config.feat_extract_norm == "layer",
    )


def _conv_geometry(kernels: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """(hop, receptive field) in samples of a stack of strided 1-d convolutions."""
    hop, field = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * hop
        hop *= stride
    return hop, field


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _digest(files: list[Path]) -> str:
    """Names the frames these files give: their names and bytes, and the transformers and torch versions
    (an upgrade may change the model code's numerics, as librosa's version does in FeatureSpec.cache_key)."""
    h = hashlib.sha256(f"transformers {version('transformers')} torch {torch.__version__}".encode())
    for f in files:
        h.update(f"\0{f.name}\0".encode())
        with f.open("rb") as stream:
            h.update(hashlib.file_digest(stream, "sha256").digest())
    return h.hexdigest()[:16]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def ssl_frames(signal: np.ndarray, spec: FeatureSpec, device: str = "cpu") -> np.ndarray:
    """One mono 16 kHz signal (a new file at prediction time) -> its (T_i, D) frames, cut to the spec's frames.

    The same frames extract_ssl caches: audio cut (not padded) to `duration_s`, the spec's layer.
    """
    if spec.ssl is None:
        raise ConfigError("ssl_frames needs a FeatureSpec whose frontend is ssl")
    model = load_ssl_model(spec.ssl, device)
    return model.frames([signal[: spec.n_samples]], spec.ssl.layer)[0][: spec.output_shape[0]]


def extract_ssl(
    utterances: Sequence[Utterance],
    spec: FeatureSpec,
    cache_dir: Path | None,
    progress: bool = True,
    device: str | None = None,
    batch_size: int = 8,
) -> FeatureSet:
    """SSL frames of every usable utterance: (N, T, D) zero-padded to spec.output_shape[0], with true lengths.

    Like nas.features.extract.extract: cached frames are read, the rest computed; unusable files
    (unreadable, corrupt, empty, silent, shorter than one frame) are reported by name and left out,
    never cached. The cache lives under cache_dir/<spec key>/<model digest>, so replacing the weights
    in the same directory never reuses their predecessor's frames. Entries are the (T_i, D) frames
    of `duration_s` of audio, not cut to `max_frames`, which (like the padding) is applied on reading.
    `device` None: CUDA when available.
    """
    assert spec.ssl is not None, "extract_ssl needs a FeatureSpec whose frontend is ssl"
    model = load_ssl_model(spec.ssl, device or default_device())
    n = len(utterances)
    x = np.zeros((n, *spec.output_shape), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    problems: dict[int, FileProblem] = {}
    spec_dir = None if cache_dir is None else Path(cache_dir) / spec.cache_key() / model.digest
    from_cache = 0
    with tqdm(total=n, desc="ssl frames", unit="file", disable=not progress) as bar:
        todo: list[int] = []
        for index, utterance in enumerate(utterances):
            cached = None if spec_dir is None else cached_features(spec_dir, Path(utterance.path), spec)
            if cached is None:
                todo.append(index)
                continue
            lengths[index], ok[index] = place(x, index, cached), True
            from_cache += 1
            bar.update()
        if todo and spec_dir is not None:
            describe_cache(spec_dir, spec)
        chunk = max(_MIN_CHUNK, 8 * batch_size)
        for start in range(0, len(todo), chunk):
            decoded: list[tuple[int, bytes, np.ndarray]] = []
            for index in todo[start : start + chunk]:
                path = Path(utterances[index].path)
                try:
                    data = read_bytes(path)
                    signal = load_audio(path, spec.sample_rate, data=data)[: spec.n_samples]
                    if model.n_frames(len(signal)) < 1:
                        raise AudioError(
                            path, f"too short for ssl frames ({len(signal)} samples < {SSL_RECEPTIVE_FIELD})"
                        )
                except AudioError as exc:
                    problems[index] = FileProblem(path, exc.reason)
                    bar.update()
                    continue
                decoded.append((index, data, signal))
            frames = model.frames([signal for _, _, signal in decoded], spec.ssl.layer, batch_size)
            for (index, data, _), features in zip(decoded, frames, strict=True):
                if spec_dir is not None:
                    # Keyed by the bytes actually decoded, so a file edited since the lookup is cached correctly.
                    store_features(spec_dir, data, features)
                lengths[index], ok[index] = place(x, index, features), True
                bar.update()
    return FeatureSet.of_rows(x, ok, problems, from_cache, lengths)
