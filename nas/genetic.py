"""Ensemble weights by a genetic algorithm (Serra, LoopQPrize 2022), vectorised over the population.

One real gene per member; a chromosome is a weight vector summing to 1. Fitness is the search's objective
(macro-F1 in the paper) of the weighted average of the members' class probabilities on validation rows.
Each generation: the `elite` best survive unchanged; every other child has two parents picked by
k-tournaments, is their average (renormalised) with probability `crossover_rate` or else a copy of the first,
and with probability `mutation_rate` gets one random gene redrawn from U[0, 1] (renormalised). Several
restarts from different random populations; the best weights over all of them win.

Unlike the paper, the uniform vector (the unweighted average) joins every initial population: with the
best-so-far kept, the result never scores below the unweighted average on validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nas.errors import SearchCancelled
from nas.metrics import population_scores
from search_spaces.genetic_ensemble import GeneticOptions

# (restart, generation from 1, scores of that generation's best, mean fitness of the generation)
GenerationCallback = Callable[[int, int, dict[str, float], float], None]


@dataclass(frozen=True)
class Evolution:
    weights: np.ndarray  # (M,) summing to 1
    fitness: float  # the objective of `weights` on the validation rows
    restart: int  # which restart found it
    best_per_generation: list[list[float]]  # per restart, the best fitness of each generation


def mix(probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average of members' probabilities (M, N, K) under weights (M,) -> (N, K), or (P, M) -> (P, N, K)."""
    return np.einsum("...m,mnk->...nk", weights, probabilities)


def scores(probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ua, wa and macro_f1 (each (P,)) of P weight vectors (P, M) on the members' probabilities (M, N, K)."""
    predicted = mix(probabilities, weights).argmax(axis=-1)  # (P, N)
    return population_scores(labels, predicted, probabilities.shape[2])


def evolve(
    probabilities: np.ndarray,
    labels: np.ndarray,
    objective: str,
    options: GeneticOptions,
    seed: int,
    on_generation: GenerationCallback | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> Evolution:
    """The best weights for the members' validation probabilities (M, N, K) and labels (N,); deterministic in `seed`."""
    n_members = probabilities.shape[0]
    assert probabilities.ndim == 3 and probabilities.shape[1] == len(labels), (
        f"probabilities must be (M, N={len(labels)}, K), got {probabilities.shape}"
    )
    best: tuple[float, int, np.ndarray] | None = None
    history: list[list[float]] = []
    for restart in range(options.restarts):
        if is_cancelled():
            raise SearchCancelled("the genetic algorithm was cancelled")
        rng = np.random.default_rng([seed, restart])
        population = _normalised(rng.random((options.population, n_members)))
        population[0] = 1 / n_members  # the unweighted average
        curve: list[float] = []
        for generation in range(1, options.generations + 1):
            all_scores = scores(probabilities, labels, population)
            fitness = all_scores[objective]
            leader = int(np.argmax(fitness))  # the first of equals: deterministic
            curve.append(float(fitness[leader]))
            if best is None or fitness[leader] > best[0]:
                best = (float(fitness[leader]), restart, population[leader].copy())
            if on_generation is not None:
                leader_scores = {key: float(values[leader]) for key, values in all_scores.items()}
                on_generation(restart, generation, leader_scores, float(fitness.mean()))
            if generation < options.generations:
                population = _next_generation(population, fitness, options, rng)
        history.append(curve)
    assert best is not None  # restarts >= 1 and generations >= 1
    return Evolution(weights=best[2], fitness=best[0], restart=best[1], best_per_generation=history)


def _next_generation(
    population: np.ndarray, fitness: np.ndarray, options: GeneticOptions, rng: np.random.Generator
) -> np.ndarray:
    size, n_members = population.shape
    elite = population[np.argsort(-fitness, kind="stable")[: options.elite]]
    n_children = size - options.elite
    contenders = rng.integers(0, size, (n_children, 2, options.tournament_k))  # two tournaments per child
    winners = np.take_along_axis(contenders, fitness[contenders].argmax(axis=2)[..., None], axis=2)[..., 0]
    first, second = population[winners[:, 0]], population[winners[:, 1]]  # (C, M) each
    crossed = rng.random(n_children) < options.crossover_rate
    children = np.where(crossed[:, None], (first + second) / 2, first)
    mutated = np.flatnonzero(rng.random(n_children) < options.mutation_rate)
    children[mutated, rng.integers(0, n_members, len(mutated))] = rng.random(len(mutated))
    return np.concatenate([elite, _normalised(children)])


def _normalised(weights: np.ndarray) -> np.ndarray:
    totals = weights.sum(axis=-1, keepdims=True)
    # A vector of zeros (every gene mutated or drawn as 0) has no direction: it becomes uniform.
    return np.where(totals > 0, weights / np.where(totals > 0, totals, 1), 1 / weights.shape[-1])
