"""Study databases filled as the strategies fill them (through the repository functions, with the keys, stages,
per-epoch values, metrics and genomes their trials store), for the dashboard's API and browser tests.

`darts_search` is an emoDARTS search of two folds as nas/strategies/darts.py and protocol.py record one: per fold
a supernet search trial (its epochs, each with the cells derived at that epoch, and its derived genome) and a
retrain trial (its epochs, a classification
report on the test speakers, validation scores, size, latency, the genome), then the final model and the
summary. `sampled_search` is a tpe-asha-like search of many sampled configurations, some pruned.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from nas.darts.genotype import import_genotype
from nas.features.spec import FeatureSpec
from nas.genome import EmoDartsArchitecture, Genome
from nas.reporting import STEP_GENOME, TrialState
from nas.spec import CorpusSpec, spec_from_preset
from nas.store import repository as repo
from nas.store.models import SearchStatus
from tests.test_genome import EMODARTS_TEXT

Sessions = sessionmaker[Session]
CLASSES = ("angry", "calm")
GENOTYPE = EMODARTS_TEXT  # the emoDARTS code's own printout (tests/test_genome.py)
# What a supernet derives in its first epochs, before it settles on GENOTYPE: its SeqNN cell is all skip connections.
EARLY_GENOTYPE = GENOTYPE.replace(
    "('lstm_att_1', 0), ('rnn_2', 1)", "('skip_connect', 0), ('skip_connect', 1)"
).replace("('lstm_1', 2)", "('skip_connect', 2)")
# Edges of each cell of GENOTYPE, as (from state, to node, op): what a drawing of it must show.
GENOTYPE_EDGES = {
    "normal": [(0, 2, "sep_conv_3x3"), (1, 2, "dil_conv_5x5"), (0, 3, "skip_connect"), (2, 3, "sep_conv_5x5")],
    "reduce": [(0, 2, "max_pool_3x3"), (1, 2, "max_pool_3x3"), (2, 3, "skip_connect"), (0, 3, "avg_pool_3x3")],
    "seq": [(0, 2, "lstm_att_1"), (1, 2, "rnn_2"), (2, 3, "lstm_1"), (0, 3, "skip_connect")],
}


def emodarts_architecture(genotype: str = GENOTYPE) -> EmoDartsArchitecture:
    cells = import_genotype(genotype)
    return EmoDartsArchitecture(
        cnn_cells=3,
        init_channels=4,
        seq_cells=1,
        seq_hidden=16,
        normal=cells["normal"],
        reduce=cells["reduce"],
        seq=cells["rnn"],
    )


def emodarts_genome(fold: int | None) -> dict[str, Any]:
    architecture = emodarts_architecture()
    genome = Genome(input=FeatureSpec(), architecture=architecture, classes=CLASSES, flags=architecture.flags())
    data = genome.model_dump(mode="json")
    data["provenance"]["fold"] = fold
    return data


def fake_report(rng: random.Random) -> dict[str, Any]:
    """A classification report (nas.metrics.classification_report's keys) of 2 classes, 20 test utterances."""
    confusion = [[rng.randint(6, 10), 0], [0, rng.randint(5, 10)]]
    confusion[0][1], confusion[1][0] = 10 - confusion[0][0], 10 - confusion[1][1]
    recall = [confusion[i][i] / 10 for i in range(2)]
    predicted = [confusion[0][j] + confusion[1][j] for j in range(2)]
    precision = [confusion[j][j] / predicted[j] if predicted[j] else 0.0 for j in range(2)]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]
    return {
        "ua": sum(recall) / 2,
        "wa": (confusion[0][0] + confusion[1][1]) / 20,
        "macro_f1": sum(f1) / 2,
        "per_class": {
            label: {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": 10}
            for i, label in enumerate(CLASSES)
        },
        "confusion": confusion,
        "ece": rng.uniform(0.02, 0.2),
        "mce": rng.uniform(0.2, 0.5),
        "brier": rng.uniform(0.1, 0.5),
        "n": 20,
    }


def _epochs(rng: random.Random, n: int, search: bool) -> list[dict[str, Any]]:
    """Per-epoch values; a supernet's (`search`) also hold the cells derived at each epoch: EARLY_GENOTYPE, then
    GENOTYPE at the last epoch."""
    steps = []
    for epoch in range(1, n + 1):
        val_ua = min(1.0, 0.5 + 0.08 * epoch + rng.uniform(-0.03, 0.03))
        step: dict[str, Any] = {
            "train_loss": 1.0 / epoch,
            "val_loss": 1.1 / epoch + 0.05,
            "val_ua": val_ua,
            "val_wa": val_ua - 0.01,
        }
        if search:
            derived = emodarts_architecture(GENOTYPE if epoch == n else EARLY_GENOTYPE)
            step |= {"arch_loss": 1.2 / epoch, "lr": 0.025}
            step[STEP_GENOME] = {"architecture": derived.model_dump(mode="json"), "flags": derived.flags()}
        else:
            step |= {"train_acc": min(1.0, 0.5 + 0.1 * epoch), "val_macro_f1": val_ua - 0.02}
        steps.append(step)
    return steps


def darts_search(
    sessions: Sessions, name: str = "emoDARTS on RAVDESS", folds: int = 2, epochs: int = 4, finish: bool = True
) -> str:
    """An emoDARTS search of `folds` folds (4 epochs each stage), completed with its summary when `finish`."""
    rng = random.Random(name)
    spec = spec_from_preset("emodarts-demo", CorpusSpec(name="ravdess", root=Path("/data/ravdess")))
    spec_json = spec.model_dump(mode="json") | {"folds": {"n_folds": 4, "only": list(range(folds))}}
    search_id = repo.create_search(sessions, spec_json, name, "darts").id
    claimed = repo.claim_next_search(sessions, "dashboard-test", 3600)
    assert claimed is not None and claimed.id == search_id
    reports = []
    for fold in range(folds):
        genome = emodarts_genome(fold)
        trial = repo.start_trial(
            sessions, search_id, f"fold-{fold}/search", {"space": spec_json["space"]}, fold, "search"
        )
        repo.add_steps(sessions, trial, enumerate(_epochs(rng, epochs, search=True), start=1))
        alphas = {"normal": [[0.1, 0.9]], "reduce": [[0.5, 0.5]], "seq": [[0.3, 0.7]]}
        repo.finish_trial(sessions, trial, TrialState.COMPLETE, {"alphas": alphas, "flags": []}, genome)
        trial = repo.start_trial(
            sessions, search_id, f"fold-{fold}/retrain/emodarts", {"family": "emodarts"}, fold, "retrain"
        )
        history = _epochs(rng, epochs, search=False)
        repo.add_steps(sessions, trial, enumerate(history, start=1))
        report = fake_report(rng)
        reports.append(report)
        best = max(history, key=lambda h: h["val_ua"])
        metrics = report | {f"val_{k}": best[f"val_{k}"] for k in ("ua", "wa", "macro_f1")}
        metrics |= {
            "best_epoch": history.index(best) + 1,
            "params": 20_000 + 1000 * fold,
            "latency_ms_p50": 1.5 + fold,
            "latency_ms_mean": 1.6 + fold,
            "fold": fold,
            "test_speakers": [f"Actor_{2 * fold + 1:02d}", f"Actor_{2 * fold + 2:02d}"],
        }
        repo.finish_trial(sessions, trial, TrialState.COMPLETE, metrics, genome)
    if finish:
        trial = repo.start_trial(sessions, search_id, "final/retrain/emodarts", {"family": "emodarts"}, None, "final")
        repo.add_steps(sessions, trial, enumerate(_epochs(rng, epochs, search=False), start=1))
        final = {"val_ua": 0.8, "val_wa": 0.8, "val_macro_f1": 0.79, "params": 20_000, "latency_ms_p50": 1.5}
        repo.finish_trial(sessions, trial, TrialState.COMPLETE, final, emodarts_genome(None))
        summary = {}
        for key in ("ua", "wa", "macro_f1"):
            values = [r[key] for r in reports]
            mean = sum(values) / len(values)
            summary |= {f"{key}_mean": mean, f"{key}_std": (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5}
        assert repo.mark_finished(sessions, search_id, SearchStatus.COMPLETED, summary=summary)
    return search_id


def sampled_search(sessions: Sessions, n: int, name: str = "tpe-asha over BiGRU heads", seed: int = 0) -> str:
    """A running tpe-asha-like search of `n` sampled configurations (fold 0, stage search): every fifth pruned,
    the rest complete with validation scores, a parameter count and a latency; 3 epochs each."""
    rng = random.Random(seed)
    spec = spec_from_preset("bigru-mfcc-demo", CorpusSpec(name="ravdess", root=Path("/data/ravdess")))
    search_id = repo.create_search(sessions, spec.model_dump(mode="json"), name, spec.strategy).id
    for i in range(n):
        params = {"units": rng.choice([32, 64, 96, 128]), "layers": rng.randint(1, 2), "lr": 10 ** rng.uniform(-4, -2)}
        trial = repo.start_trial(sessions, search_id, f"fold-0/trial-{i}", params, 0, "search")
        history = _epochs(rng, 3, search=False)
        repo.add_steps(sessions, trial, enumerate(history, start=1))
        state = TrialState.PRUNED if i % 5 == 4 else TrialState.COMPLETE
        metrics = {
            "epochs": 3,
            "optuna_trial": i,
            "val_ua": round(rng.uniform(0.4, 0.9), 3),
            "val_wa": rng.uniform(0.4, 0.9),
            "params": params["units"] * 1000 * params["layers"] + rng.randint(0, 500),
            "latency_ms_p50": rng.uniform(0.5, 5),
        }
        repo.finish_trial(sessions, trial, state, metrics)
    return search_id
