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
    loaded = model.load_state_dict(load_weights(files[WEIGHTS]), strict=False)
    # Bundles saved before temperature scaling (Guo et al., 2017) was fitted hold no temperature: uncalibrated, 1.
    missing = [k for k in loaded.missing_keys if k.rsplit(".", 1)[-1] != "temperature"]
    if missing or loaded.unexpected_keys:
        raise SernasError(
            f"{bundle}: its weights do not fit its genome (missing {', '.join(missing) or 'none'}; unexpected "
            f"{', '.join(loaded.unexpected_keys) or 'none'}); export the search's result folder again"
        )
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
    if trained_on := metrics.get("trained_on"):
        lines.append(
            f"- Trained on {trained_on['utterances']} utterances of {len(trained_on['speakers'])} speakers "
            f"(early stopping on {', '.join(metrics['validation_speakers'])})"
        )
    if summary:
        expected = metrics.get("expected", {})
        n_folds = expected.get("folds", len(metrics.get("folds", [])))
        behind = f"{n_folds} speaker fold(s)"
        if expected:
            behind += f", {expected['test_speakers']} test speakers"
        scores = ", ".join(f"{name} {_spread(summary, key, n_folds)}" for key, name in SCORE_NAMES.items())
        lines += [f"- Expected on new speakers ({behind}, never seen in search or training): {scores}"]
    if calibration := _calibration(metrics):
        lines.append(calibration)
    lines += [
        "",
        "Speaker-independent evaluation: test speakers were never seen in search or training.",
        "Load and predict: `sernas predict <this bundle> <audio files>` or `nas.bundle.predict_files`.",
    ]
    return "\n".join(lines) + "\n"


SCORE_NAMES = {"ua": "UA", "wa": "WA", "macro_f1": "macro-F1"}


def _calibration(metrics: dict[str, Any]) -> str | None:
    """The calibration line of a temperature-scaled model: its test speakers' expected calibration error
    before and after (a final model's: the mean over the folds' models, each scaled on its own validation)."""
    if "temperature" not in metrics:
        return None
    expected = metrics.get("expected", {})
    if "ece_mean" in expected:
        before, after, on = expected["uncalibrated_ece_mean"], expected["ece_mean"], "mean over the folds' models"
    elif "uncalibrated" in metrics:
        before, after, on = metrics["uncalibrated"]["ece"], metrics["ece"], "its fold's test speakers"
    else:  # folds run before calibration existed
        return None
    return (
        f"- Calibration on new speakers (expected calibration error, {on}): {before:.3f} before temperature "
        f"scaling, {after:.3f} after; temperature {metrics['temperature']:.2f}, fitted on validation speakers"
    )


def _spread(summary: dict[str, float], key: str, n_folds: int) -> str:
    """mean ± std over folds; one fold has no spread to show."""
    mean = summary[f"{key}_mean"]
    return f"{mean:.3f} (one fold: no spread)" if n_folds == 1 else f"{mean:.3f} ± {summary[f'{key}_std']:.3f}"


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


PREDICT_BATCH = 64  # files whose features are held at once and scored in one forward pass per network


def predict_files(bundle: Path, paths: list[Path]) -> list[Prediction]:
    """Class probabilities of each audio file, scored in batches; an ensemble computes each distinct member
    input once per file. A file that cannot be read gets its error, and the others their predictions."""
    genome, model, _ = load_model(bundle)
    if isinstance(genome, EnsembleGenome):
        networks = list(zip(genome.members, model.member, strict=True))
    else:
        networks = [(genome, model)]
    predictions: list[Prediction] = []
    for start in range(0, len(paths), PREDICT_BATCH):
        readable: list[tuple[Path, dict[FeatureSpec, np.ndarray]]] = []
        for path in paths[start : start + PREDICT_BATCH]:
            try:
                readable.append((path, _member_inputs(path, [member.input for member, _ in networks])))
            except SernasError as exc:
                predictions.append(Prediction(path, None, {}, str(exc)))
        if not readable:
            continue
        probabilities = [
            _probabilities(net, member.input, [inputs[member.input] for _, inputs in readable])
            for member, net in networks
        ]
        mixed = model.mix(probabilities) if isinstance(genome, EnsembleGenome) else probabilities[0]
        for (path, _), probs in zip(readable, mixed, strict=True):
            label = genome.classes[int(np.argmax(probs))]
            predictions.append(Prediction(path, label, dict(zip(genome.classes, map(float, probs), strict=True))))
    order = {path: i for i, path in enumerate(paths)}
    return sorted(predictions, key=lambda p: order[p.path])


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


def _probabilities(model: SerModel, spec: FeatureSpec, features: list[np.ndarray]) -> np.ndarray:
    """(N, K) class probabilities of N files' features under a network."""
    from nas.features.extract import place
    from nas.train import predict_proba

    if spec.layout == "frames":  # each (T_i, D): one unpadded sequence, cut to at most max_frames by `place`
        longest = min(max(len(f) for f in features), spec.output_shape[0])
        x = np.zeros((len(features), longest, spec.n_features), dtype=np.float32)  # (N, T, D)
        lengths = np.array([place(x, i, f) for i, f in enumerate(features)])
        return predict_proba(model, x, lengths)
    return predict_proba(model, np.stack(features))  # (N, 1, F, T)
