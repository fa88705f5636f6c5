"""Distributions: validation mirrors Optuna, JSON round trips, and both Optuna and Ray Tune stay inside the support."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from pydantic import ValidationError
from ray import tune
from ray.tune.search.sample import Categorical, Float, Integer, Quantized

from search_spaces import bigru, distributions
from search_spaces.distributions import (
    SPACE_ADAPTER,
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    suggest,
    to_optuna,
    to_tune,
)

# The BiGRU paper's space, as the family declares it (l2 ends at 0.028: 0.01..0.03 is not a whole
# number of 0.003 steps).
BIGRU: dict[str, Distribution] = dict(bigru.SPACE)

# Shapes the BiGRU space lacks: log scales, a continuous range, a grid not anchored at 0, mixed choices.
OTHERS: dict[str, Distribution] = {
    "log_int": IntDistribution(low=1, high=4, log=True),
    "offset_int": IntDistribution(low=130, high=250, step=30),
    "single_int": IntDistribution(low=7, high=7),
    "log_float": FloatDistribution(low=1e-5, high=1e-1, log=True),
    "plain_float": FloatDistribution(low=-1.0, high=1.0),
    "mixed": CategoricalDistribution(choices=(True, 1.5, 3, "x")),
}

ALL = {**BIGRU, **OTHERS}
MODULE = Path(distributions.__file__)


def test_importing_the_module_imports_neither_optuna_nor_ray() -> None:
    # Load the file alone, so that whatever the package's __init__ imports does not count against it.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('distributions', {str(MODULE)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['distributions'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert module.IntDistribution(low=1, high=2).contains(2)\n"
        "print(sorted({'optuna', 'ray', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_space_json_round_trip_keeps_every_field_type_and_order() -> None:
    text = SPACE_ADAPTER.dump_json(ALL)
    back = SPACE_ADAPTER.validate_json(text)
    assert back == ALL
    assert list(back) == list(ALL)
    assert [type(d) for d in back.values()] == [type(d) for d in ALL.values()]
    # Categorical choices keep their JSON types: True stays a bool, 3 an int, 1.5 a float.
    assert [type(c) for c in back["mixed"].choices] == [bool, float, int, str]
    assert json.loads(text)["l2"] == {"type": "float", "low": 0.01, "high": 0.028, "step": 0.003, "log": False}


def test_plain_json_is_told_apart_by_type() -> None:
    space = SPACE_ADAPTER.validate_python(
        {
            "a": {"type": "int", "low": 0, "high": 4, "step": 2},
            "b": {"type": "float", "low": 0, "high": 1},
            "c": {"type": "categorical", "choices": ["x"]},
        }
    )
    assert space == {
        "a": IntDistribution(low=0, high=4, step=2),
        "b": FloatDistribution(low=0.0, high=1.0),
        "c": CategoricalDistribution(choices=("x",)),
    }
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        SPACE_ADAPTER.validate_python({"a": {"type": "normal", "low": 0, "high": 1}})


def test_distributions_are_frozen_and_refuse_unknown_fields() -> None:
    dist = IntDistribution(low=1, high=2)
    with pytest.raises(ValidationError, match="frozen"):
        dist.low = 0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        IntDistribution(low=1, high=2, q=1)  # type: ignore[call-arg]


# (model, fields, what the message must say, whether Optuna itself raises on the same fields)
INVALID: list[tuple[type, dict[str, Any], str, bool]] = [
    (IntDistribution, {"low": 5, "high": 2}, "low 5 is above high 2", True),
    (FloatDistribution, {"low": 0.5, "high": 0.1}, "low 0.5 is above high 0.1", True),
    (IntDistribution, {"low": 0, "high": 4, "step": 0}, "step 0 must be a positive integer", True),
    (FloatDistribution, {"low": 0.0, "high": 1.0, "step": -0.1}, "step -0.1 must be positive", True),
    (FloatDistribution, {"low": 0.0, "high": 1.0, "step": 0.0}, "step 0.0 must be positive", True),
    (IntDistribution, {"low": 1, "high": 9, "step": 2, "log": True}, "log=True cannot be combined with step 2", True),
    (FloatDistribution, {"low": 0.1, "high": 1.0, "step": 0.1, "log": True}, "cannot be combined with step", True),
    (IntDistribution, {"low": 0, "high": 8, "log": True}, "log=True needs low >= 1, got low 0", True),
    (FloatDistribution, {"low": 0.0, "high": 1.0, "log": True}, "log=True needs low > 0, got low 0.0", True),
    (FloatDistribution, {"low": -1.0, "high": 1.0, "log": True}, "needs low > 0, got low -1.0", True),
    # Optuna accepts these two, lowering high with a warning; refused here with the high it would use.
    (IntDistribution, {"low": 0, "high": 10, "step": 3}, "not a whole number of steps of 3; set high to 9", False),
    (FloatDistribution, {"low": 0.01, "high": 0.03, "step": 0.003}, "steps of 0.003; set high to 0.028", False),
]


@pytest.mark.parametrize(("model", "fields", "message", "optuna_refuses"), INVALID)
def test_invalid_distribution_is_refused_with_what_to_fix(
    model: type, fields: dict[str, Any], message: str, optuna_refuses: bool
) -> None:
    with pytest.raises(ValidationError) as info:
        model(**fields)
    assert message in str(info.value)
    optuna_cls = getattr(optuna.distributions, model.__name__)
    if optuna_refuses:
        with pytest.raises(ValueError):
            optuna_cls(**fields)


@pytest.mark.parametrize(
    ("model", "fields", "adjusted_high"),
    [
        (IntDistribution, {"low": 0, "high": 10, "step": 3}, 9),
        (FloatDistribution, {"low": 0.01, "high": 0.03, "step": 0.003}, 0.028),
        (FloatDistribution, {"low": 0.0, "high": 1.0, "step": 0.3}, 0.9),
    ],
)
def test_suggested_high_is_what_optuna_silently_uses_and_is_accepted(
    model: type, fields: dict[str, Any], adjusted_high: float
) -> None:
    with pytest.warns(UserWarning, match="not divisible by `step`"):
        optuna_dist = getattr(optuna.distributions, model.__name__)(**fields)
    assert optuna_dist.high == adjusted_high
    with pytest.raises(ValidationError, match=f"set high to {adjusted_high} "):
        model(**fields)
    assert model(**{**fields, "high": adjusted_high}).high == adjusted_high


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"choices": ()}, "choices is empty"),
        ({"choices": ("adam", "sgd", "adam")}, "choice 'adam' repeats 'adam'"),
        # Optuna finds a value's choice by ==, so 1 and True (or 1 and 1.0) would be confused.
        ({"choices": (1, True)}, "choice True repeats 1"),
        ({"choices": (1, 1.0)}, "choice 1.0 repeats 1"),
        ({"choices": ("a", None)}, "Input should be a valid"),
        ({"choices": (float("nan"),)}, "finite number"),
    ],
)
def test_invalid_categorical_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CategoricalDistribution(**fields)


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (IntDistribution, {"low": True, "high": 3}, "valid integer"),
        (IntDistribution, {"low": 1.0, "high": 3}, "valid integer"),
        (FloatDistribution, {"low": 0.0, "high": math.inf}, "finite number"),
        (FloatDistribution, {"low": math.nan, "high": 1.0}, "finite number"),
    ],
)
def test_bounds_must_be_json_safe_numbers_of_the_right_kind(model: type, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model(**fields)


def test_degenerate_but_valid_ranges_are_accepted_as_optuna_does() -> None:
    for dist in (
        IntDistribution(low=3, high=3),
        IntDistribution(low=3, high=3, step=5),
        FloatDistribution(low=0.2, high=0.2, step=0.1),
        FloatDistribution(low=1.0, high=1.0, log=True),
    ):
        assert to_optuna({"x": dist})["x"].single()


def test_contains() -> None:
    base = BIGRU["base_units"]
    assert [v for v in range(100, 300) if base.contains(v)] == [128, 160, 192, 224, 256]
    assert base.contains(np.int64(160))
    assert not base.contains(160.0)
    assert not IntDistribution(low=0, high=1).contains(True)

    dropout = BIGRU["dropout"]
    assert dropout.contains(0.0) and dropout.contains(0.5) and dropout.contains(3 * 0.05)
    assert dropout.contains(0)
    assert not dropout.contains(0.07)
    assert not dropout.contains(0.55)
    assert not dropout.contains(-0.05)
    assert not dropout.contains(math.nan)
    assert not dropout.contains(False)
    assert BIGRU["l2"].grid() == [0.01, 0.013, 0.016, 0.019, 0.022, 0.025, 0.028]

    plain = OTHERS["plain_float"]
    assert plain.contains(-1.0) and plain.contains(0.123) and not plain.contains(1.0000001)

    mixed = OTHERS["mixed"]
    assert mixed.contains(True) and mixed.contains(3) and mixed.contains(1.5) and mixed.contains("x")
    assert not mixed.contains(1)  # 1 == True in Python, but True is the choice
    assert not mixed.contains("3")
    assert not BIGRU["optimizer"].contains("adamw")


def test_to_optuna_equals_hand_built_distributions() -> None:
    od = optuna.distributions
    assert to_optuna(ALL) == {
        "layers": od.IntDistribution(1, 2),
        "base_units": od.IntDistribution(128, 256, step=32),
        "final_units": od.IntDistribution(32, 128, step=32),
        "lr": od.FloatDistribution(0.001, 0.01, step=0.001),
        "dropout": od.FloatDistribution(0.0, 0.5, step=0.05),
        "l2": od.FloatDistribution(0.01, 0.028, step=0.003),
        "optimizer": od.CategoricalDistribution(["adam", "sgd", "rmsprop"]),
        "log_int": od.IntDistribution(1, 4, log=True),
        "offset_int": od.IntDistribution(130, 250, step=30),
        "single_int": od.IntDistribution(7, 7),
        "log_float": od.FloatDistribution(1e-5, 1e-1, log=True),
        "plain_float": od.FloatDistribution(-1.0, 1.0),
        "mixed": od.CategoricalDistribution([True, 1.5, 3, "x"]),
    }
    assert to_optuna(ALL)["dropout"] != od.FloatDistribution(0.0, 0.5, step=0.1)


def _on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-9


def test_suggest_stays_inside_the_space_over_50_random_trials() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, ALL)
        drawn.append(values)
        assert list(values) == list(ALL)
        assert trial.distributions == to_optuna(ALL)
        return 0.0

    study.optimize(objective, n_trials=50)
    assert len(drawn) == 50
    for values in drawn:
        for name, value in values.items():
            assert ALL[name].contains(value), (name, value)
        assert _on_grid(values["lr"], 0.0, 0.001)
        assert _on_grid(values["dropout"], 0.0, 0.05)
        assert _on_grid(values["l2"], 0.01, 0.003)
        assert values["base_units"] % 32 == 0 and (values["offset_int"] - 130) % 30 == 0
    assert {v["optimizer"] for v in drawn} == {"adam", "sgd", "rmsprop"}
    assert {v["layers"] for v in drawn} == {1, 2}


def test_to_tune_uses_the_native_domains_where_their_support_matches() -> None:
    domains = to_tune(ALL)
    assert isinstance(domains["base_units"], Integer) and isinstance(domains["base_units"].sampler, Quantized)
    assert isinstance(domains["dropout"], Float) and isinstance(domains["dropout"].sampler, Quantized)
    assert isinstance(domains["lr"], Float) and isinstance(domains["log_float"], Float)
    assert isinstance(domains["layers"], Integer) and isinstance(domains["log_int"], Integer)
    assert isinstance(domains["optimizer"], Categorical)
    assert domains["optimizer"].categories == ["adam", "sgd", "rmsprop"]
    # Ray's quantized grids count from 0; these start off that grid, so they go through an explicit choice.
    assert isinstance(domains["l2"], Categorical) and domains["l2"].categories == BIGRU["l2"].grid()
    assert isinstance(domains["offset_int"], Categorical)
    assert domains["offset_int"].categories == [130, 160, 190, 220, 250]


def _samples(domain: tune.search.sample.Domain, n: int = 4000) -> list[Any]:
    return list(domain.sample(size=n, random_state=np.random.default_rng(0)))


def test_to_tune_samples_stay_inside_the_support() -> None:
    for name, domain in to_tune(ALL).items():
        for value in _samples(domain):
            assert ALL[name].contains(value), (name, value)


@pytest.mark.parametrize("name", [n for n, d in ALL.items() if not isinstance(d, FloatDistribution) or d.step])
def test_to_tune_reaches_every_point_of_a_small_support(name: str) -> None:
    dist = ALL[name]
    seen = _samples(to_tune({name: dist})[name])
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            assert any(CategoricalDistribution(choices=(choice,)).contains(v) for v in seen), choice
    else:
        # Ray's quantized floats come out as k * step (0.15000000000000002), so points match within tolerance.
        for point in dist.grid():
            assert any(math.isclose(v, point, rel_tol=1e-9, abs_tol=1e-12) for v in seen), point


def test_to_tune_continuous_ranges_cover_their_span() -> None:
    log_values = np.array(_samples(to_tune(OTHERS)["log_float"]))
    # Log-uniform: each decade of 1e-5..1e-1 gets about a quarter of the draws.
    decades = np.histogram(np.log10(log_values), bins=[-5, -4, -3, -2, -1])[0] / len(log_values)
    assert np.all(np.abs(decades - 0.25) < 0.05)
    plain = np.array(_samples(to_tune(OTHERS)["plain_float"]))
    assert plain.min() < -0.99 and plain.max() > 0.99
