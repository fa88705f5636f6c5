"""The hyperband strategy's space, options and presets (Serra, LoopQPrize 2022; Li et al., 2018).

Hyperband runs several successive-halving brackets with reduction factor eta (3 by default): each bracket
starts many configurations on a small budget of epochs and keeps the best 1 / eta at each rung, up to
`max_epochs`. The configurations are drawn from one or more model families' spaces: at random (as
Hyperband is published) or by TPE through Optuna. With several families the family itself is a
choice, and each configuration names only its family's hyperparameters.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.features.spec import FeatureSpec, LogMel, Mfcc
from search_spaces.cnn_lstm import FusedCnnLstmArchitecture
from search_spaces.distributions import CategoricalDistribution, Distribution, IntDistribution
from search_spaces.families import FamilyName, check_layout, get_family

SPLIT_ROWS = FusedCnnLstmArchitecture.model_fields["split_rows"].default


class HyperbandSpace(BaseModel):
    """The families to search, and per family the distributions that replace its published ones and the
    values held fixed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    families: tuple[FamilyName, ...] = Field(("cnn2d-lstm",), min_length=1)
    params: dict[str, dict[str, Distribution]] = Field(
        default_factory=dict, description="family -> {hyperparameter: distribution}, replacing the published ones"
    )
    fixed: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="family -> {hyperparameter: value} held at that value, not searched"
    )

    @model_validator(mode="after")
    def _known(self) -> HyperbandSpace:
        for section, per_family in (("params", self.params), ("fixed", self.fixed)):
            strangers = sorted(set(per_family) - set(self.families))
            if strangers:
                raise ValueError(
                    f"{section} names {', '.join(strangers)}, which is not searched; "
                    f"families: {', '.join(self.families)}"
                )
            for family, keys in per_family.items():
                names = get_family(family).names()
                unknown = sorted(set(keys) - names)
                if unknown:
                    raise ValueError(
                        f"{section}.{family}: no hyperparameter {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
                    )
        for family, held in self.fixed.items():
            both = sorted(set(held) & set(self.params.get(family, {})))
            if both:
                raise ValueError(f"{family}: {', '.join(both)} both searched and fixed; drop them from params or fixed")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families {list(self.families)} repeats a family")
        return self

    def distributions(self, family: str) -> dict[str, Distribution]:
        """What is searched for `family`: its published space, with `params` replacing entries, less `fixed`."""
        held = self.fixed.get(family, {})
        merged = {**get_family(family).space, **self.params.get(family, {})}
        return {name: dist for name, dist in merged.items() if name not in held}


class HyperbandOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: Literal["hyperband", "async-hyperband", "fifo"] = Field(
        "hyperband",
        description="hyperband: synchronous brackets (Li et al., 2018); async-hyperband: ASHA brackets; "
        "fifo: no early stopping, every configuration trains max_epochs (plain random or TPE search)",
    )
    sampler: Literal["random", "tpe"] = Field("random", description="random (as published) or Optuna's TPE")
    n_trials: int | None = Field(
        None, ge=1, description="configurations tried per fold; None: one whole Hyperband band (see `trials`)"
    )
    max_epochs: int = Field(27, ge=1, description="the most epochs one configuration trains (Hyperband's R)")
    reduction_factor: int = Field(3, ge=2, description="eta: 1 / eta of the configurations go on at each rung")
    grace_epochs: int = Field(1, ge=1, description="async-hyperband: epochs before a trial may first be stopped")
    validation_fraction: float = Field(
        0.15, gt=0, lt=0.5, description="share of a fold's training speakers held out to judge trials"
    )
    parallel_trials: int | None = Field(None, ge=1, description="trials at once (None: as many as the CPUs allow)")
    trial_cpus: float = Field(1, gt=0, description="CPUs of each trial")

    def trials(self) -> int:
        """Configurations per fold: `n_trials`, or one band of Li et al.'s (2018) Hyperband, every bracket
        full: for s = 0..s_max (s_max = log_eta(max_epochs), rounded), bracket s starts
        ceil((s_max + 1) / (s + 1) * eta**s) configurations on max_epochs / eta**s epochs, as Ray Tune's
        HyperBandScheduler counts them (R = 9, eta 3: 3 + 5 + 9 = 17; R = 27: 4 + 6 + 12 + 27 = 49)."""
        if self.n_trials is not None:
            return self.n_trials
        brackets = round(math.log(self.max_epochs) / math.log(self.reduction_factor)) + 1
        return sum(math.ceil(brackets / (s + 1) * self.reduction_factor**s) for s in range(brackets))

    @model_validator(mode="after")
    def _grace(self) -> HyperbandOptions:
        if self.grace_epochs > self.max_epochs:
            raise ValueError(f"grace_epochs {self.grace_epochs} exceeds max_epochs {self.max_epochs}")
        return self


class HyperbandSections(BaseModel):
    """The strategy-specific part of a hyperband search (and of a hyperband preset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["hyperband"] = "hyperband"
    space: HyperbandSpace = HyperbandSpace()
    # As published: 128 mels of audio padded to 8 s, 512-sample hop: 128 x 251, standard-scaled per mel.
    features: FeatureSpec = FeatureSpec(frontends=(LogMel(n_mels=128),), duration_s=8.0, hop_length=512, pool_to=None)
    options: HyperbandOptions = HyperbandOptions()

    @model_validator(mode="after")
    def _layout(self) -> HyperbandSections:
        check_layout(self.space.families, self.features.layout)
        if "cnn-lstm-fused" not in self.space.families:
            return self
        if "split_rows" in self.space.params.get("cnn-lstm-fused", {}):
            raise ValueError("cnn-lstm-fused: split_rows says which feature rows are MFCC; fix it, do not search it")
        rows = self.features.output_shape[1]
        split = self.space.fixed.get("cnn-lstm-fused", {}).get("split_rows", SPLIT_ROWS)
        if not 0 < split < rows:
            raise ValueError(
                f"cnn-lstm-fused sends the first {split} feature rows to its 1D branch and the rest to its 2D "
                f"branch, but the map has {rows} rows: stack mfcc and logmel frontends, or fix split_rows"
            )
        return self


_DEMO_FEATURES = FeatureSpec(
    frontends=(Mfcc(n_mfcc=20), LogMel(n_mels=32)), duration_s=3.0, hop_length=512, pool_to=None
)
_DEMO_FAMILIES = ("cnn2d-lstm", "cnn1d-lstm", "cnn-lstm-fused", "lstm-cnn")
_DEMO_CONV = {
    "blocks": IntDistribution(low=1, high=3),
    "first_filters": CategoricalDistribution(choices=(8, 16)),
    "later_filters": CategoricalDistribution(choices=(16, 32)),
    "lstm_units": IntDistribution(low=16, high=32, step=8),
    "lr": CategoricalDistribution(choices=(1e-2, 3e-3, 1e-3)),
}

# name -> (description, sections)
PRESETS: dict[str, tuple[str, HyperbandSections]] = {
    "cnn2d-lstm-hyperband": (
        "As published: Hyperband (eta 3, up to 27 epochs, one whole band: 49 configurations per fold) over the "
        "CNN2D-LSTM space on 128 x 251 log-mel maps",
        HyperbandSections(),
    ),
    "cnn-families-demo": (
        "A CPU-sized Hyperband over four families (CNN2D-LSTM, CNN1D-LSTM, fused, LSTM-CNN) with narrow convs "
        "on 20 MFCC + 32 mel rows of 3 s: 17 configurations of up to 9 epochs per fold (Hyperband's three "
        "brackets for eta 3), in minutes",
        HyperbandSections(
            space=HyperbandSpace(
                families=_DEMO_FAMILIES,
                params=dict.fromkeys(_DEMO_FAMILIES, _DEMO_CONV),
                fixed={"cnn-lstm-fused": {"split_rows": 20}},
            ),
            features=_DEMO_FEATURES,
            options=HyperbandOptions(max_epochs=9),
        ),
    ),
}
