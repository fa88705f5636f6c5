"""Typed hyperparameter distributions that both Optuna and Ray Tune can search.

A model family declares its searchable hyperparameters once, as plain data (``dict[str, Distribution]``);
the tpe-asha strategy searches that space with Optuna (Akiba et al., 2019, "Optuna: A Next-generation
Hyperparameter Optimization Framework", KDD) and the hyperband strategy with Ray Tune (Liaw et al., 2018,
"Tune: A Research Platform for Distributed Model Selection and Training", ICML AutoML workshop). Declaring
it once keeps the two strategies comparable: they draw from the same support, and a space stored with a
study reloads from JSON unchanged.

The validation mirrors what ``optuna.distributions`` accepts, with one deliberate difference: where Optuna
silently lowers ``high`` to the last whole step (with a warning), a space here is refused with the adjusted
``high`` in the message, so that the stored space is exactly what gets searched.

Neither Optuna nor Ray is imported at module level: the API, the workers and the tests import spaces without
paying for (or depending on) either search library.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

if TYPE_CHECKING:
    import optuna
    from ray.tune.search.sample import Domain

# Bounds and choices must survive a JSON round trip, which inf and nan do not.
_FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Strict so that True or 2.0 is not quietly taken for an integer bound.
_StrictInt = Annotated[int, Field(strict=True)]

ParamValue: TypeAlias = str | bool | int | float
"""A sampled hyperparameter value (and the type of a categorical choice)."""

# Optuna's own tolerance for "on the step grid" (FloatDistribution._contains).
_GRID_TOLERANCE = 1e-8


def _dec(x: float) -> decimal.Decimal:
    # Through str() as Optuna does: 0.003 means the decimal 0.003, not its binary approximation.
    return decimal.Decimal(str(x))


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntDistribution(_Base):
    """Integers ``low, low + step, ..., high`` (both ends included), optionally log-scaled."""

    type: Literal["int"] = "int"
    low: _StrictInt
    high: _StrictInt
    step: _StrictInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntDistribution:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}; swap them or fix the range")
        if self.step <= 0:
            raise ValueError(f"step {self.step} must be a positive integer")
        if self.log and self.step != 1:
            raise ValueError(f"log=True cannot be combined with step {self.step} (Optuna forbids it); drop one")
        if self.log and self.low < 1:
            raise ValueError(f"log=True needs low >= 1, got low {self.low}; raise low or set log=False")
        if (self.high - self.low) % self.step:
            adjusted = self.low + (self.high - self.low) // self.step * self.step
            raise ValueError(
                f"range {self.low}..{self.high} is not a whole number of steps of {self.step}; "
                f"set high to {adjusted} (what Optuna would silently use) or change step"
            )
        return self

    def grid(self) -> list[int]:
        """Every value of the support, lowest first."""
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: object) -> bool:
        # numpy integers count (Ray samples them); bools do not, though Python calls them ints.
        if isinstance(value, bool) or not isinstance(value, Integral):
            return False
        v = int(value)
        return self.low <= v <= self.high and (v - self.low) % self.step == 0


class FloatDistribution(_Base):
    """Reals in ``[low, high]``; on the grid ``low + k * step`` when ``step`` is set; or log-scaled."""

    type: Literal["float"] = "float"
    low: _FiniteFloat
    high: _FiniteFloat
    step: _FiniteFloat | None = None
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatDistribution:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}; swap them or fix the range")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step {self.step} must be positive, or None for a continuous range")
        if self.log and self.step is not None:
            raise ValueError(f"log=True cannot be combined with step {self.step} (Optuna forbids it); drop one")
        if self.log and self.low <= 0:
            raise ValueError(f"log=True needs low > 0, got low {self.low}; raise low or set log=False")
        if self.step is not None:
            d_low, d_range, d_step = _dec(self.low), _dec(self.high) - _dec(self.low), _dec(self.step)
            if d_range % d_step != 0:
                adjusted = float(d_range // d_step * d_step + d_low)
                raise ValueError(
                    f"range {self.low}..{self.high} is not a whole number of steps of {self.step}; "
                    f"set high to {adjusted} (what Optuna would silently use) or change step"
                )
        return self

    def _n_steps(self) -> int:
        assert self.step is not None
        return int((_dec(self.high) - _dec(self.low)) / _dec(self.step))

    def grid(self) -> list[float]:
        """Every value of a stepped support, lowest first, computed in decimal so 0.01 + 6 * 0.003 is 0.028."""
        if self.step is None:
            raise ValueError("a continuous FloatDistribution has no grid; set step")
        d_low, d_step = _dec(self.low), _dec(self.step)
        return [float(d_low + k * d_step) for k in range(self._n_steps() + 1)]

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        v = float(value)
        if math.isnan(v):
            return False
        if self.step is None:
            return self.low <= v <= self.high
        # Grid points computed as k * step or low + k * step can land an ulp outside [low, high];
        # being on the grid (to Optuna's tolerance) at an index in 0..n is what matters.
        k = (v - self.low) / self.step
        nearest = round(k)
        return 0 <= nearest <= self._n_steps() and abs(k - nearest) < _GRID_TOLERANCE


def _same_choice(a: object, b: object) -> bool:
    # True == 1 == 1.0 in Python; a categorical choice of True is not the choice 1.
    return isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str) and a == b


class CategoricalDistribution(_Base):
    """One of ``choices``, unordered."""

    type: Literal["categorical"] = "categorical"
    choices: tuple[Annotated[str, Field(strict=True)] | bool | _StrictInt | _FiniteFloat, ...]

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, choices: tuple[ParamValue, ...]) -> tuple[ParamValue, ...]:
        if not choices:
            raise ValueError("choices is empty; give at least one choice")
        # Optuna maps a value back to its choice by ==, so 1, 1.0 and True cannot all be told apart.
        for i, c in enumerate(choices):
            for earlier in choices[:i]:
                if c == earlier:
                    raise ValueError(f"choice {c!r} repeats {earlier!r}; each choice must be distinct")
        return choices

    def contains(self, value: object) -> bool:
        return any(_same_choice(value, c) for c in self.choices)


Distribution = Annotated[IntDistribution | FloatDistribution | CategoricalDistribution, Field(discriminator="type")]
"""Any one hyperparameter's distribution; JSON objects are told apart by their ``type`` field."""

Space: TypeAlias = Mapping[str, Distribution]
"""A searchable space: hyperparameter name to distribution, in the order they are suggested."""

SPACE_ADAPTER: TypeAdapter[dict[str, Distribution]] = TypeAdapter(dict[str, Distribution])
"""Validates and (de)serialises a space: ``SPACE_ADAPTER.validate_json(SPACE_ADAPTER.dump_json(space))``."""


def to_optuna(space: Space) -> dict[str, optuna.distributions.BaseDistribution]:
    """The same space as Optuna distributions (for ``Study.ask(fixed_distributions=...)`` or enqueueing)."""
    import optuna.distributions as od

    out: dict[str, od.BaseDistribution] = {}
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            out[name] = od.IntDistribution(dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            out[name] = od.FloatDistribution(dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            out[name] = od.CategoricalDistribution(dist.choices)
    return out


def suggest(trial: optuna.trial.BaseTrial, space: Space) -> dict[str, ParamValue]:
    """Draw one configuration from ``trial``, parameter by parameter in the space's order."""
    values: dict[str, ParamValue] = {}
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            values[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            values[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            values[name] = trial.suggest_categorical(name, dist.choices)
    return values


def _on_zero_grid(low: float, step: float) -> bool:
    return _dec(low) % _dec(step) == 0


def to_tune(space: Space) -> dict[str, Domain]:
    """The same space as Ray Tune domains, each with exactly the support Optuna would search.

    Ray's bounds differ from Optuna's: ``randint``/``lograndint`` exclude the upper bound, and the
    quantized samplers (``qrandint``, ``quniform``) put their grid on multiples of ``q`` counted from 0,
    not from ``low`` (``qrandint(130, 250, 30)`` gives 150..240), and ``quniform`` refuses bounds that are
    not such multiples. Where the grids would differ, the explicit grid becomes a ``choice``, which
    keeps the support (and uniform weights) at the cost of Ray seeing the values as unordered.
    """
    from ray import tune

    out: dict[str, Domain] = {}
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            if dist.log:
                out[name] = tune.lograndint(dist.low, dist.high + 1)
            elif dist.step == 1:
                out[name] = tune.randint(dist.low, dist.high + 1)
            elif _on_zero_grid(dist.low, dist.step):
                # q > 1 makes qrandint's upper bound inclusive; each grid point is equally likely.
                out[name] = tune.qrandint(dist.low, dist.high, dist.step)
            else:
                out[name] = tune.choice(dist.grid())
        elif isinstance(dist, FloatDistribution):
            if dist.log:
                out[name] = tune.loguniform(dist.low, dist.high)
            elif dist.step is None:
                out[name] = tune.uniform(dist.low, dist.high)
            elif _on_zero_grid(dist.low, dist.step):
                # Rounding a uniform draw gives low and high half the weight of inner grid points.
                out[name] = tune.quniform(dist.low, dist.high, dist.step)
            else:
                out[name] = tune.choice(dist.grid())
        else:
            out[name] = tune.choice(list(dist.choices))
    return out


__all__ = [
    "SPACE_ADAPTER",
    "CategoricalDistribution",
    "Distribution",
    "FloatDistribution",
    "IntDistribution",
    "ParamValue",
    "Space",
    "suggest",
    "to_optuna",
    "to_tune",
]
