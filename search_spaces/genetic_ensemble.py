"""The genetic-ensemble strategy's members and options (Serra, LoopQPrize 2022).

A genetic algorithm searches the weights of a weighted average of the class probabilities of models that
earlier searches already trained (their folds' retrained models, whatever their strategy): its space is
one real gene per member, so the space section names the members. Real genes, a random population
normalised to sum 1, k-tournament selection, average crossover, single-gene uniform mutation, elitism
and restarts with different seeds, as published.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EnsembleMembers(BaseModel):
    """Which finished fold models make up the ensemble: trials by id, or per fold the best `top_k` of searches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: tuple[int, ...] = Field(
        (), description="trial ids of finished fold models (stage retrain); the service's study database only"
    )
    searches: tuple[str, ...] = Field(
        (), description="search ids (the service) or result folders (the command line), whose fold models compete"
    )
    top_k: int = Field(
        6, ge=1, description="per fold, the top_k fold models of `searches` by validation score (the paper had 6)"
    )

    @model_validator(mode="after")
    def _one_way(self) -> EnsembleMembers:
        if self.trials and self.searches:
            raise ValueError("name members by trials or by searches, not both")
        if len(set(self.trials)) != len(self.trials) or len(set(self.searches)) != len(self.searches):
            raise ValueError("a member is named twice")
        return self

    @property
    def named(self) -> bool:
        return bool(self.trials or self.searches)


class GeneticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    population: int = Field(50, ge=2, description="weight vectors per generation")
    generations: int = Field(100, ge=1, description="generations of each restart")
    tournament_k: int = Field(3, ge=1, description="k of the k-tournament that picks each parent")
    crossover_rate: float = Field(0.9, ge=0, le=1, description="chance that a child averages two parents")
    mutation_rate: float = Field(0.2, ge=0, le=1, description="chance that a child gets one gene redrawn from U[0, 1]")
    elite: int = Field(2, ge=0, description="best weight vectors copied unchanged into the next generation")
    restarts: int = Field(5, ge=1, description="independent runs from different random populations; the best wins")

    @model_validator(mode="after")
    def _fits(self) -> GeneticOptions:
        if self.elite >= self.population:
            raise ValueError(f"elite {self.elite} must be smaller than population {self.population}")
        if self.tournament_k > self.population:
            raise ValueError(f"tournament_k {self.tournament_k} exceeds population {self.population}")
        return self


class GeneticEnsembleSections(BaseModel):
    """The strategy-specific part of a genetic-ensemble search (and of its preset). No features: each member
    reads its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["genetic-ensemble"] = "genetic-ensemble"
    space: EnsembleMembers = EnsembleMembers()
    options: GeneticOptions = GeneticOptions()


PRESETS: dict[str, tuple[str, GeneticEnsembleSections]] = {
    "genetic-ensemble": (
        "Weights for an ensemble of finished fold models (name them: space.searches or space.trials), "
        "found by a genetic algorithm on their validation predictions: 5 restarts x 100 generations of 50",
        GeneticEnsembleSections(),
    ),
}
