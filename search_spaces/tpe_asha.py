"""The tpe-asha strategy's space, options and presets (Ahmadianshalchi et al., 2026).

Optuna's TPE sampler (multivariate, grouped) proposes a family's hyperparameters; successive
halving prunes trials from epoch `min_resource` on, keeping the best 1 / `reduction_factor` at each
rung (ASHA: Li et al., 2020). Every trial trains on a fold's training speakers and is judged on
speaker-disjoint validation speakers; the chosen configuration is then retrained and tested once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.features.spec import FeatureSpec, Mfcc, Ssl
from search_spaces.distributions import Distribution, IntDistribution
from search_spaces.families import FamilyName, check_layout, get_family


class TpeAshaSpace(BaseModel):
    """A searchable family, the distributions to search and the values to hold fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: FamilyName = "bigru-head"
    params: dict[str, Distribution] | None = Field(
        None, description="hyperparameter -> distribution; None: the family's published space"
    )
    fixed: dict[str, Any] = Field(default_factory=dict, description="hyperparameters held at a value")

    @model_validator(mode="after")
    def _known(self) -> TpeAshaSpace:
        names = get_family(self.family).names()
        for section, keys in (("params", self.distributions()), ("fixed", self.fixed)):
            unknown = sorted(set(keys) - names)
            if unknown:
                raise ValueError(
                    f"{section}: {self.family} has no hyperparameter {', '.join(unknown)}; "
                    f"valid: {', '.join(sorted(names))}"
                )
        both = sorted(set(self.distributions()) & set(self.fixed))
        if both:
            raise ValueError(f"{', '.join(both)} both searched and fixed: drop them from params or from fixed")
        return self

    def distributions(self) -> dict[str, Distribution]:
        return dict(get_family(self.family).space) if self.params is None else dict(self.params)


class TpeAshaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_trials: int | None = Field(10, ge=1, description="trials per fold; None: until timeout_s")
    timeout_s: float | None = Field(None, gt=0, description="seconds of trials per fold; None: until n_trials")
    n_startup_trials: int = Field(5, ge=0, description="random trials before TPE takes over")
    multivariate: bool = True
    group: bool = True
    pruner: Literal["successive-halving", "none"] = "successive-halving"
    min_resource: int = Field(5, ge=1, description="first epoch at which a trial may be pruned")
    reduction_factor: int = Field(4, ge=2, description="1 / reduction_factor of the trials survive each rung")
    max_epochs: int | None = Field(None, ge=1, description="cap every trial's epochs (None: the recipe's)")
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="share of a fold's training speakers held out to judge trials"
    )
    parallel_trials: int = Field(1, ge=1, description="trials at once, each a Ray task, when Ray runs the search")
    trial_cpus: float = Field(1, gt=0, description="CPUs of each trial's Ray task")

    @model_validator(mode="after")
    def _budget(self) -> TpeAshaOptions:
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("give a budget: n_trials, timeout_s or both")
        return self


class TpeAshaSections(BaseModel):
    """The strategy-specific part of a tpe-asha search (and of a tpe-asha preset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["tpe-asha"] = "tpe-asha"
    space: TpeAshaSpace = TpeAshaSpace()
    features: FeatureSpec = FeatureSpec(
        frontends=(Ssl(),), layout="frames", duration_s=6.0, max_frames=300, pool_to=None
    )
    options: TpeAshaOptions = TpeAshaOptions()

    @model_validator(mode="after")
    def _layout(self) -> TpeAshaSections:
        check_layout((self.space.family,), self.features.layout)
        return self


# name -> (description, sections)
PRESETS: dict[str, tuple[str, TpeAshaSections]] = {
    "bigru-distilhubert": (
        "As published: BiGRU heads on frozen DistilHuBERT frames (300 x 768), TPE + successive halving, "
        "10 trials per fold (needs local DistilHuBERT weights, see README)",
        TpeAshaSections(),
    ),
    "bigru-mfcc-demo": (
        "A CPU-sized BiGRU search on 40 MFCC frames (40 per second, 3 s), narrower GRUs (32-96 then 16-32 "
        "units), 8 trials of up to 20 epochs per fold, pruning from epoch 3: the whole protocol in minutes, "
        "without SSL weights",
        TpeAshaSections(
            space=TpeAshaSpace(
                params={
                    **get_family("bigru-head").space,
                    "base_units": IntDistribution(low=32, high=96, step=32),
                    "final_units": IntDistribution(low=16, high=32, step=16),
                }
            ),
            features=FeatureSpec(
                frontends=(Mfcc(n_mfcc=40),), layout="frames", duration_s=3.0, hop_length=400, pool_to=None
            ),
            options=TpeAshaOptions(n_trials=8, n_startup_trials=4, max_epochs=20, min_resource=3),
        ),
    ),
}
