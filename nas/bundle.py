"""Model bundles: genome.json + weights.safetensors + metrics.json (+ a model card when exported).

A bundle rebuilds, loads and predicts in one call outside the service:
`predict_files(bundle, paths)`. An ensemble's bundle has the same three files: its genome holds the
member genomes and weights, its safetensors every member's weights.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import SernasError
from nas.features.spec import FeatureSpec
from nas.genome import AnyGenome, EnsembleGenome, parse_genome

if TYPE_CHECKING:
    from torch import nn

    from nas.models import SerModel

GENOME, WEIGHTS, METRICS, CARD = "genome.json", "weights.safetensors", "metrics.json", "MODEL_CARD.md"
REPORT = "report.md"  # a search's per-fold table, beside its exported model
PREDICTIONS = "predictions.npz"  # a retrained model's class probabilities on its validation and test rows
WEIGHTS_ARTIFACT, PREDICTIONS_ARTIFACT = "weights", "predictions"  # a fold model's files, as the store names them
SPEC = "spec.json"  # the search's spec, in its result folder
FOLD_DONE = "result.json"  # a finished fold's marker, in its fold folder
RESULT_FILES = (GENOME, WEIGHTS, METRICS, REPORT)  # what a finished search's result folder offers


def save_model(folder: Path, genome: AnyGenome, model: nn.Module, metrics: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / GENOME).write_text(genome.model_dump_json(indent=2))
    (folder / METRICS).write_text(json.dumps(metrics, indent=2))
    weights = folder / WEIGHTS
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights)
    return weights


def load_model(bundle: Path) -> tuple[AnyGenome, nn.Module, dict[str, Any]]:
    """(genome, model in eval mode with its trained weights, metrics) from a bundle folder or zip; the model
    is a `SerModel`, or an `EnsembleModel` for an ensemble's bundle."""
    from safetensors.torch import load as load_weights

    from nas.models import build_any

    files = _read_bundle(bundle)
    genome = parse_genome(files[GENOME])
    model = build_any(genome)
    model.load_state_dict(load_weights(files[WEIGHTS]))
    model.eval()
    metrics = json.loads(files[METRICS]) if METRICS in files else {}
    return genome, model, metrics


def _read_bundle(bundle: Path) -> dict[str, bytes]:
    if not bundle.exists():
        raise SernasError(f"no bundle at {bundle}; pass a result folder or an exported .zip")
    if bundle.is_dir():
        files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.name in (GENOME, WEIGHTS, METRICS)}
    else:
        try:
            with zipfile.ZipFile(bundle) as archive:
                files = {n: archive.read(n) for n in archive.namelist() if n in (GENOME, WEIGHTS, METRICS)}
        except zipfile.BadZipFile as exc:
            raise SernasError(f"{bundle} is neither a result folder nor a bundle .zip") from exc
    missing = [n for n in (GENOME, WEIGHTS) if n not in files]
    if missing:
        raise SernasError(f"{bundle} is not a model bundle: {', '.join(missing)} missing")
    return files


def model_card(genome: AnyGenome, metrics: dict[str, Any]) -> str:
    summary = metrics.get("summary", {})
    lines = [
        f"# {genome.family} model for speech emotion recognition",
        "",
        f"- Classes: {', '.join(genome.classes)}",
    ]
    if isinstance(genome, EnsembleGenome):
        lines.append("- Members (weighted average of their class probabilities):")
        lines += [
            f"  - {member.family}, weight {weight:.4f}, input {member.input.model_dump_json()}"
            for member, weight in zip(genome.members, genome.weights, strict=True)
        ]
    else:
        lines.append(f"- Input: {genome.input.model_dump_json()}")
    lines += [
        f"- Parameters: {metrics.get('params', 'unknown')}",
        f"- Flags: {', '.join(genome.flags) or 'none'}",
    ]
    if summary:
        lines += [
            f"- Test UA over folds: {summary['ua_mean']:.3f} ± {summary['ua_std']:.3f}",
            f"- Test WA over folds: {summary['wa_mean']:.3f} ± {summary['wa_std']:.3f}",
        ]
    lines += [
        "",
        "Speaker-independent evaluation: test speakers were never seen in search or training.",
        "Load and predict: `sernas predict <this bundle> <audio files>` or `nas.bundle.predict_files`.",
    ]
    return "\n".join(lines) + "\n"


def export_bundle(source: Path, destination: Path) -> Path:
    """Zip a result (or fold) folder's model into one portable file with a model card."""
    files = _read_bundle(source)
    genome = parse_genome(files[GENOME])
    metrics = json.loads(files.get(METRICS, b"{}"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(dir=destination.parent, suffix=".zip", delete=False) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for name, content in files.items():
            archive.writestr(name, content)
        archive.writestr(CARD, model_card(genome, metrics))
    Path(tmp.name).replace(destination)
    return destination


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str | None  # None when the file could not be read
    probabilities: dict[str, float]
    error: str | None = None


def predict_files(bundle: Path, paths: list[Path]) -> list[Prediction]:
    """Class probabilities of each audio file; an ensemble computes each distinct member input once per file."""
    genome, model, _ = load_model(bundle)
    if isinstance(genome, EnsembleGenome):
        networks = list(zip(genome.members, model.member, strict=True))
    else:
        networks = [(genome, model)]
    predictions: list[Prediction] = []
    for path in paths:
        try:
            inputs = _member_inputs(path, [member.input for member, _ in networks])
        except SernasError as exc:
            predictions.append(Prediction(path, None, {}, str(exc)))
            continue
        probabilities = [_probabilities(net, member.input, inputs[member.input]) for member, net in networks]
        probs = model.mix(probabilities) if isinstance(genome, EnsembleGenome) else probabilities[0]
        probs = probs[0]
        label = genome.classes[int(np.argmax(probs))]
        predictions.append(Prediction(path, label, dict(zip(genome.classes, map(float, probs), strict=True))))
    return predictions


def _member_inputs(path: Path, specs: list[FeatureSpec]) -> dict[FeatureSpec, np.ndarray]:
    """The features of one file for each distinct spec, its audio decoded once per sample rate."""
    from nas.features.audio import load_audio
    from nas.features.extract import signal_features

    signals: dict[int, np.ndarray] = {}
    inputs: dict[FeatureSpec, np.ndarray] = {}
    for spec in specs:
        if spec in inputs:
            continue
        if spec.sample_rate not in signals:
            signals[spec.sample_rate] = load_audio(path, spec.sample_rate)
        inputs[spec] = signal_features(signals[spec.sample_rate], spec)
    return inputs


def _probabilities(model: SerModel, spec: FeatureSpec, features: np.ndarray) -> np.ndarray:
    """(1, K) class probabilities of one file's features under a network."""
    from nas.train import predict_proba

    if spec.layout == "frames":  # (T_i, D): one unpadded sequence, at most max_frames long
        features = features[: spec.output_shape[0]]
        return predict_proba(model, features[np.newaxis], np.array([len(features)]))
    return predict_proba(model, features[np.newaxis])
