"""SSL frames (nas.features.ssl) from a tiny random HubertModel saved to disk, on real RAVDESS utterances.

The model has HuBERT's convolutional encoder geometry (400-sample receptive field, 320-sample hop)
and only 32 channels, so loading and extraction run the real code paths in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel

from nas.data.types import Utterance
from nas.errors import ConfigError
from nas.features import ssl as ssl_module
from nas.features.audio import load_audio
from nas.features.extract import FeatureSet, extract
from nas.features.spec import FeatureSpec, Ssl
from nas.features.ssl import SSL_DIR_ENV, SslModel, extract_ssl, load_ssl_model, ssl_frames

DIM = 32


def _save_model(directory: Path, seed: int, **config: object) -> HubertModel:
    """A randomly initialised 2-layer, 32-wide HubertModel with the default conv strides and kernels."""
    torch.manual_seed(seed)
    tiny = HubertConfig(
        hidden_size=DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(DIM,) * 7,
        num_conv_pos_embedding_groups=4,
        **config,
    )
    model = HubertModel(tiny).eval()
    model.save_pretrained(directory)
    return model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tiny-hubert"
    _save_model(directory, seed=0)
    return directory


def _spec(model_dir: Path, **overrides: object) -> FeatureSpec:
    layer = overrides.pop("layer", None)
    return FeatureSpec(
        frontends=(Ssl(model_dir=model_dir, dim=DIM, layer=layer),),
        layout="frames",
        **{"duration_s": 8.0, **overrides},
    )


def _utterances(root: Path, n: int) -> list[Utterance]:
    """n real utterances spread over two actors."""
    paths = (
        sorted((root / "Actor_01").glob("*.flac"))[: n // 2] + sorted((root / "Actor_02").glob("*.flac"))[: n - n // 2]
    )
    return [Utterance(path=p, label="neutral", speaker=p.parent.name) for p in paths]


def _n_samples(utterance: Utterance) -> int:
    return len(load_audio(utterance.path, 16000))


def _entries(cache_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.npy")}


def test_frames_have_the_true_lengths_and_zero_padding(ravdess_root: Path, model_dir: Path) -> None:
    utterances = _utterances(ravdess_root, 4)
    spec = _spec(model_dir)  # 8 s: longer than every RAVDESS file, so nothing is cut
    result = extract_ssl(utterances, spec, None, progress=False, device="cpu")
    assert isinstance(result, FeatureSet)
    assert result.x.shape == (4, *spec.output_shape) == (4, spec.raw_shape[1], DIM)
    assert result.x.dtype == np.float32 and result.lengths is not None and result.lengths.dtype == np.int64
    expected = [(_n_samples(u) - 400) // 320 + 1 for u in utterances]
    assert result.lengths.tolist() == expected
    assert result.kept == [0, 1, 2, 3] and result.problems == [] and result.from_cache == 0
    for row, length in zip(result.x, expected, strict=True):
        assert np.isfinite(row).all() and np.abs(row[:length]).sum(axis=1).min() > 0
        assert not row[length:].any()


def test_audio_cut_to_duration_gives_the_spec_frames(ravdess_root: Path, model_dir: Path) -> None:
    utterances = _utterances(ravdess_root, 3)
    spec = _spec(model_dir, duration_s=2.0)  # every file is longer: all cut to 32000 samples
    result = extract_ssl(utterances, spec, None, progress=False, device="cpu")
    assert spec.raw_shape[1] == (32000 - 400) // 320 + 1 == 99
    assert result.lengths.tolist() == [99, 99, 99]
    assert result.x.shape == (3, 99, DIM) and np.abs(result.x).sum(axis=2).min() > 0
    # max_frames cuts on reading: the first 50 frames of the same sequences.
    short = extract_ssl(utterances, spec.model_copy(update={"max_frames": 50}), None, progress=False, device="cpu")
    assert short.x.shape == (3, 50, DIM) and short.lengths.tolist() == [50, 50, 50]
    np.testing.assert_array_equal(short.x, result.x[:, :50])


def test_extract_dispatches_ssl_specs(ravdess_root: Path, model_dir: Path) -> None:
    utterances = _utterances(ravdess_root, 2)
    spec = _spec(model_dir, duration_s=2.0)
    via_extract = extract(utterances, spec, None, progress=False)
    direct = extract_ssl(utterances, spec, None, progress=False, device="cpu")
    np.testing.assert_allclose(via_extract.x, direct.x, atol=1e-4)


def test_second_extraction_reads_the_cache(
    ravdess_root: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    utterances = _utterances(ravdess_root, 4)
    spec = _spec(model_dir)
    cache = tmp_path / "cache"
    first = extract_ssl(utterances, spec, cache, progress=False, device="cpu")
    written = _entries(cache)
    assert len(written) == 4
    digest = load_ssl_model(spec.ssl, "cpu").digest
    assert all(p.parent.parent.name == digest and p.parent.parent.parent.name == spec.cache_key() for p in written)
    assert FeatureSpec.model_validate_json((cache / spec.cache_key() / digest / "spec.json").read_text()) == spec
    # Entries are the unpadded (T_i, D) frames.
    assert sorted(np.load(p).shape[0] for p in written) == sorted(first.lengths.tolist())

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("frames were recomputed although they were cached")

    monkeypatch.setattr(SslModel, "frames", fail)
    second = extract_ssl(utterances, spec, cache, progress=False, device="cpu")
    assert second.from_cache == 4
    np.testing.assert_array_equal(second.x, first.x)
    np.testing.assert_array_equal(second.lengths, first.lengths)
    assert _entries(cache) == written


def test_new_weights_in_the_same_directory_do_not_reuse_the_cache(
    ravdess_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    utterances = _utterances(ravdess_root, 2)
    spec = _spec(model_dir, duration_s=2.0)
    cache = tmp_path / "cache"
    old = extract_ssl(utterances, spec, cache, progress=False, device="cpu")
    old_digest = load_ssl_model(spec.ssl, "cpu").digest

    _save_model(model_dir, seed=1)
    new = extract_ssl(utterances, spec, cache, progress=False, device="cpu")
    assert load_ssl_model(spec.ssl, "cpu").digest != old_digest
    assert new.from_cache == 0
    assert not np.allclose(new.x, old.x)
    # The reloaded model is the new one: the same frames when computed afresh.
    np.testing.assert_allclose(extract_ssl(utterances, spec, None, progress=False, device="cpu").x, new.x, atol=1e-5)


def test_unusable_files_are_reported_by_name_and_left_out(ravdess_root: Path, model_dir: Path, tmp_path: Path) -> None:
    real = _utterances(ravdess_root, 2)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    missing = tmp_path / "missing.flac"
    utterances = [real[0], Utterance(corrupt, "neutral", "x"), real[1], Utterance(missing, "neutral", "x")]
    cache = tmp_path / "cache"
    result = extract_ssl(utterances, _spec(model_dir), cache, progress=False, device="cpu")
    assert result.kept == [0, 2]
    assert [p.path for p in result.problems] == [corrupt, missing]
    assert "corrupt" in result.problems[0].reason and "cannot read" in result.problems[1].reason
    assert result.x.shape[0] == len(result.lengths) == 2
    assert len(_entries(cache)) == 2  # failures are never cached


def test_missing_weights_say_where_they_were_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SSL_DIR_ENV, str(tmp_path / "models"))
    with pytest.raises(ConfigError) as raised:
        load_ssl_model(Ssl(), "cpu")
    message = str(raised.value)
    assert SSL_DIR_ENV in message and str(tmp_path / "models" / "distilhubert") in message
    assert "model_dir" in message and "save_pretrained" in message and "config.json" in message

    # A directory with a config but no weights names the directory too.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    with pytest.raises(ConfigError, match="missing weights") as raised:
        load_ssl_model(Ssl(model_dir=empty), "cpu")
    assert str(empty) in str(raised.value)


def test_default_directory_is_under_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SSL_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ssl_module.ssl_model_dir(Ssl()) == tmp_path / "sernas" / "ssl" / "distilhubert"
    with pytest.raises(ConfigError, match=str(tmp_path / "sernas" / "ssl" / "distilhubert")):
        load_ssl_model(Ssl(), "cpu")


def test_dim_and_layer_are_checked_against_the_model(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="32-d frames"):
        load_ssl_model(Ssl(model_dir=model_dir), "cpu")  # dim 768 by default
    with pytest.raises(ConfigError, match="2 transformer layers"):
        load_ssl_model(Ssl(model_dir=model_dir, dim=DIM, layer=3), "cpu")


def test_model_is_loaded_once_frozen_and_in_eval_mode(model_dir: Path) -> None:
    model = load_ssl_model(Ssl(model_dir=model_dir, dim=DIM), "cpu")
    assert load_ssl_model(Ssl(model_dir=model_dir, dim=DIM, layer=1), "cpu") is model
    assert not model.network.training
    assert not any(p.requires_grad for p in model.network.parameters())
    assert not model.masked and not model.normalize  # group-norm encoder, no preprocessor_config.json


@pytest.mark.parametrize("layer", [0, 1, 2, None])
def test_layer_selects_that_hidden_state(ravdess_root: Path, model_dir: Path, layer: int | None) -> None:
    signal = load_audio(_utterances(ravdess_root, 1)[0].path, 16000)
    spec = _spec(model_dir, layer=layer)
    frames = ssl_frames(signal, spec)
    network = HubertModel.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.inference_mode():
        output = network(torch.from_numpy(signal)[None], output_hidden_states=True)
    expected = output.last_hidden_state if layer is None else output.hidden_states[layer]
    assert frames.shape == ((len(signal) - 400) // 320 + 1, DIM)
    np.testing.assert_allclose(frames, expected[0].numpy(), atol=1e-5)
    if layer is not None and layer < 2:
        assert not np.allclose(frames, output.last_hidden_state[0].numpy(), atol=1e-3)


@pytest.mark.parametrize("duration_s", [8.0, 2.0], ids=["uncut-varied-lengths", "cut-equal-lengths"])
def test_frames_do_not_depend_on_the_batch(ravdess_root: Path, model_dir: Path, duration_s: float) -> None:
    utterances = _utterances(ravdess_root, 6)
    spec = _spec(model_dir, duration_s=duration_s)
    batched = extract_ssl(utterances, spec, None, progress=False, device="cpu", batch_size=4)
    for row, length, utterance in zip(batched.x, batched.lengths, utterances, strict=True):
        alone = ssl_frames(load_audio(utterance.path, 16000), spec)
        assert alone.shape == (length, DIM)
        np.testing.assert_allclose(row[:length], alone, atol=1e-4)


def test_layer_norm_models_batch_with_an_attention_mask(ravdess_root: Path, tmp_path: Path) -> None:
    """feat_extract_norm="layer" (HuBERT-large style): padded batches with a mask give the frames of one alone."""
    _save_model(tmp_path / "large-style", 0, feat_extract_norm="layer", do_stable_layer_norm=True)
    spec = _spec(tmp_path / "large-style")
    assert load_ssl_model(spec.ssl, "cpu").masked
    utterances = _utterances(ravdess_root, 4)
    batched = extract_ssl(utterances, spec, None, progress=False, device="cpu", batch_size=4)
    for row, length, utterance in zip(batched.x, batched.lengths, utterances, strict=True):
        np.testing.assert_allclose(row[:length], ssl_frames(load_audio(utterance.path, 16000), spec), atol=1e-4)


def test_preprocessor_config_decides_normalisation(ravdess_root: Path, model_dir: Path) -> None:
    signal = load_audio(_utterances(ravdess_root, 1)[0].path, 16000)
    spec = _spec(model_dir)
    raw = ssl_frames(signal, spec)
    (model_dir / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    assert load_ssl_model(spec.ssl, "cpu").normalize  # the new file is noticed: reloaded
    normalised = ssl_frames(signal, spec)
    standard = (signal - signal.mean()) / np.sqrt(signal.var() + 1e-7)
    np.testing.assert_allclose(normalised, ssl_frames(standard.astype(np.float32), spec), atol=1e-5)
    assert not np.allclose(raw, normalised, atol=1e-3)
