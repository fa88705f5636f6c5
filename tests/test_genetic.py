"""The genetic algorithm on synthetic member probabilities, and the vectorised scores it is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from nas.genetic import evolve, mix, scores
from nas.metrics import classification_report, population_scores
from search_spaces.genetic_ensemble import GeneticOptions

K, N = 6, 600


def _members(seed: int, n_noise: int, right_at: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, N, K) probabilities where member `right_at` leans to the true class and the others are noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    members = rng.dirichlet(np.ones(K), size=(n_noise + 1, N))
    members[right_at] = 0.25 * np.eye(K)[labels] + 0.75 * rng.dirichlet(np.ones(K), size=N)
    return members, labels


def test_population_scores_are_classification_reports_of_each_candidate():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k, n = int(rng.integers(2, 7)), int(rng.integers(1, 40))
        labels, probabilities = rng.integers(0, k, n), rng.dirichlet(np.ones(k), size=(5, n))
        batch = population_scores(labels, probabilities.argmax(axis=2), k)
        for p in range(5):
            report = classification_report(labels, probabilities[p], [str(c) for c in range(k)])
            for key in ("ua", "wa", "macro_f1"):
                assert batch[key][p] == pytest.approx(report[key], abs=1e-12), key


def test_weights_concentrate_on_the_one_member_that_is_right():
    members, labels = _members(seed=1, n_noise=4, right_at=2)
    evolution = evolve(members, labels, "macro_f1", GeneticOptions(generations=40, restarts=2), seed=0)
    assert evolution.weights.sum() == pytest.approx(1.0)
    assert int(np.argmax(evolution.weights)) == 2
    assert evolution.weights[2] > 0.5, evolution.weights
    alone = scores(members, labels, np.eye(5))["macro_f1"]
    assert (
        evolution.fitness == pytest.approx(alone[2], abs=0.02) and evolution.fitness > alone[[0, 1, 3, 4]].max() + 0.3
    )


def test_never_below_the_unweighted_average_and_elitism_keeps_the_best():
    members, labels = _members(seed=3, n_noise=5, right_at=0)
    evolution = evolve(members, labels, "ua", GeneticOptions(generations=15, restarts=3), seed=7)
    uniform = scores(members, labels, np.full((1, 6), 1 / 6))["ua"][0]
    assert evolution.fitness >= uniform
    for curve in evolution.best_per_generation:
        assert curve == sorted(curve), "with elite >= 1 a generation's best never falls"
    best_seen = max(max(curve) for curve in evolution.best_per_generation)
    assert evolution.fitness == best_seen == pytest.approx(scores(members, labels, evolution.weights[None])["ua"][0])


def test_deterministic_under_a_seed():
    members, labels = _members(seed=5, n_noise=3, right_at=1)
    options = GeneticOptions(generations=10, restarts=2)
    first, again = evolve(members, labels, "wa", options, seed=11), evolve(members, labels, "wa", options, seed=11)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert first.best_per_generation == again.best_per_generation
    other = evolve(members, labels, "wa", options, seed=12)
    assert not np.array_equal(first.weights, other.weights)


def test_each_generation_is_reported_with_the_leaders_scores():
    members, labels = _members(seed=2, n_noise=2, right_at=0)
    seen: list[tuple[int, int]] = []

    def record(restart: int, generation: int, leader: dict[str, float], mean: float) -> None:
        seen.append((restart, generation))
        assert set(leader) == {"ua", "wa", "macro_f1"} and 0 <= mean <= leader["macro_f1"] <= 1

    evolve(members, labels, "macro_f1", GeneticOptions(generations=4, restarts=2), seed=0, on_generation=record)
    assert seen == [(r, g) for r in range(2) for g in range(1, 5)]


def test_mix_is_the_weighted_average_of_probabilities():
    members, _ = _members(seed=4, n_noise=1, right_at=0)
    np.testing.assert_allclose(mix(members, np.array([0.25, 0.75])), 0.25 * members[0] + 0.75 * members[1])
    np.testing.assert_allclose(mix(members, np.array([[1.0, 0.0]]))[0], members[0])


def test_options_refuse_an_elite_as_large_as_the_population():
    with pytest.raises(ValueError, match="elite"):
        GeneticOptions(population=4, elite=4)
