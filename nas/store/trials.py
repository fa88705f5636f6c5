"""The study database as a read-only source of finished fold models (see nas.trials)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from nas.bundle import PREDICTIONS_ARTIFACT, WEIGHTS_ARTIFACT
from nas.errors import ConfigError
from nas.genome import Genome
from nas.reporting import TrialState
from nas.store.models import Search, Trial
from nas.store.repository import Sessions
from nas.trials import FoldModel, TrialSource


class StoreTrials(TrialSource):
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def trials(self, ids: Sequence[int]) -> list[FoldModel]:
        with self.sessions() as session:
            rows = {
                t.id: t
                for t in session.scalars(
                    select(Trial).where(Trial.id.in_(ids)).options(selectinload(Trial.artifacts))
                ).all()
            }
            missing = [i for i in ids if i not in rows]
            if missing:
                raise ConfigError(f"no trial with id {', '.join(map(str, missing))}")
            specs = self._specs(session, {t.search_id for t in rows.values()})
        models = []
        for trial_id in ids:
            model = _fold_model(rows[trial_id], specs[rows[trial_id].search_id])
            if model is None:
                trial = rows[trial_id]
                raise ConfigError(
                    f"trial {trial_id} ({trial.key}, {trial.state.value}) is not a finished fold model: only a "
                    "fold's retrained model (stage retrain) keeps the predictions an ensemble needs"
                )
            models.append(model)
        return models

    def fold_models(self, search: str) -> list[FoldModel]:
        with self.sessions() as session:
            if session.get(Search, search) is None:
                raise ConfigError(f"no search with id {search!r}")
            rows = session.scalars(
                select(Trial)
                .where(Trial.search_id == search, Trial.state == TrialState.COMPLETE)
                .options(selectinload(Trial.artifacts))
                .order_by(Trial.fold, Trial.id)
            ).all()
            spec = self._specs(session, {search})[search]
        return [model for trial in rows if (model := _fold_model(trial, spec)) is not None]

    @staticmethod
    def _specs(session: Session, search_ids: set[str]) -> dict[str, dict]:
        return {s.id: s.spec for s in session.scalars(select(Search).where(Search.id.in_(search_ids))).all()}


def _fold_model(trial: Trial, spec: dict) -> FoldModel | None:
    files = {a.name: Path(a.path) for a in trial.artifacts}
    if trial.state != TrialState.COMPLETE or trial.genome is None or trial.fold is None:
        return None
    if WEIGHTS_ARTIFACT not in files or PREDICTIONS_ARTIFACT not in files:
        return None
    return FoldModel(
        name=f"trial {trial.id} (search {trial.search_id[:8]}, fold {trial.fold})",
        search=trial.search_id,
        search_spec=spec,
        fold=trial.fold,
        genome=Genome.model_validate(trial.genome),
        metrics=trial.metrics or {},
        weights=files[WEIGHTS_ARTIFACT],
        predictions=files[PREDICTIONS_ARTIFACT],
    )
