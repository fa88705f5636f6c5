"""SearchSpec: everything that defines one search, as one JSON document.

One spec type per strategy on a shared base (corpus, features, folds, seed, device, gpus, preset,
objective), joined in one union discriminated by `strategy`. The same JSON travels CLI/API ->
study database -> worker unchanged; `SEARCH_SPEC` validates it anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from nas.augment.waveform import AudioAugment
from nas.errors import ConfigError

if TYPE_CHECKING:
    from nas.data.types import Utterance
    from nas.trials import TrialSource
from search_spaces.darts import DartsSections
from search_spaces.genetic_ensemble import GeneticEnsembleSections
from search_spaces.hyperband import HyperbandSections
from search_spaces.presets import get_preset
from search_spaces.tpe_asha import TpeAshaSections


class CorpusSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="corpus reader: ravdess, crema-d, tess, savee, emodb, iemocap, casia, shemo, csv")
    root: Path = Field(description="corpus directory (or the CSV manifest for `csv`)")
    classes: tuple[str, ...] | None = Field(None, description="keep only these labels (after label_map)")
    label_map: dict[str, str] = Field(default_factory=dict, description="rename labels, e.g. excited -> happy")
    speakers: tuple[str, ...] | None = Field(None, description="keep only these speakers")
    meta: dict[str, str] = Field(
        default_factory=dict,
        description="keep utterances whose metadata match, e.g. improvised=true for IEMOCAP's usual subset",
    )


class FoldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Literal["speaker", "session"] = "speaker"
    n_folds: int = Field(6, ge=2, description="speaker folds (ignored for session folds)")
    only: tuple[int, ...] | None = Field(None, description="run just these fold indices")

    @model_validator(mode="after")
    def _only_existing(self) -> FoldSpec:
        if self.by == "speaker" and self.only is not None:
            unknown = sorted(i for i in self.only if not 0 <= i < self.n_folds)
            if unknown:
                raise ValueError(f"only names folds {unknown}, but there are only folds 0..{self.n_folds - 1}")
        return self


Objective = Literal["ua", "wa", "macro_f1"]


class SpecBase(BaseModel):
    """What every search has, whatever its strategy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: CorpusSpec
    folds: FoldSpec = FoldSpec()
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus: float = Field(0, ge=0, description="GPUs reserved for the search (Ray sets CUDA_VISIBLE_DEVICES)")
    preset: str | None = Field(None, description="the preset this spec was built from, for the record")
    objective: Objective = Field(
        "ua", description="the validation metric that chooses among candidates (test scores never choose)"
    )
    noise_snr_db: tuple[float, ...] = Field(
        (),
        description="also score each fold's test rows with white Gaussian noise at these SNRs in dB, e.g. "
        "[20, 10, 0] as Li et al. (2026); networks only (an ensemble's members carry their own)",
    )
    augment: AudioAugment | None = Field(
        None,
        description="train on augmented copies of each training utterance besides the original (time stretch, "
        "pitch shift, white noise as Li et al. (2026)); never applied to validation or test rows; None: no "
        "augmentation",
    )

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, seed: int) -> int:
        if not 0 <= seed < 2**32:
            raise ValueError("seed must be in [0, 2**32)")
        return seed

    @model_validator(mode="after")
    def _device_has_gpus(self) -> SpecBase:
        if self.device == "cuda" and self.gpus == 0:
            raise ValueError("device 'cuda' reserves no GPU: set gpus to 1 (or more), or device 'auto'")
        return self

    def search_gpus(self) -> float:
        """GPUs the search's own task holds (strategies whose trials are Ray tasks of their own hold none)."""
        return self.gpus

    def search_cpus(self, share: float) -> float:
        """CPUs the search's own task holds, given its `share` of the cluster."""
        return share

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        """Refuse (ConfigError) a search whose inputs from earlier searches do not fit it, given the corpus's
        selected utterances; the service's controller calls it at submission. Most searches take none."""


class DartsSearch(SpecBase, DartsSections):
    """emoDARTS (Rajapakshe et al., 2024): a CNN + SeqNN supernet searched by DARTS, per fold."""


class TpeAshaSearch(SpecBase, TpeAshaSections):
    """Optuna TPE with successive-halving pruning over a family's hyperparameters (Ahmadianshalchi et al., 2026)."""

    gpus: float = Field(0, ge=0, description="GPUs of each trial (a Ray task of its own; the search holds none)")

    def search_gpus(self) -> float:
        # Ray releases a blocked task's CPUs but keeps its GPUs: a driver holding the GPU its
        # trials ask for would wait on them forever.
        return 0


class HyperbandSearch(SpecBase, HyperbandSections):
    """Hyperband (Ray Tune) over the CNN-LSTM, LSTM-CNN and CNN-Transformer families (Serra, LoopQPrize 2022)."""

    gpus: float = Field(0, ge=0, description="GPUs of each trial (a Ray Tune trial of its own; the search holds none)")

    def search_gpus(self) -> float:
        return 0  # as for tpe-asha: the trials hold the GPUs

    def search_cpus(self, share: float) -> float:
        # Tune's trials are Ray actors with `trial_cpus` each; a driver holding CPUs too would leave them
        # pending forever on a machine it fills (2 CPUs: the driver's 2 and no trial ever starts).
        return 0


class GeneticEnsembleSearch(SpecBase, GeneticEnsembleSections):
    """A genetic algorithm that weights an ensemble of finished fold models of any strategy (Serra, LoopQPrize
    2022). Its corpus, folds and seed must be those of its members' searches."""

    objective: Objective = Field(
        "macro_f1", description="the validation metric the weights are evolved on (the paper's: macro-F1)"
    )

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        from nas.data.folds import make_folds
        from nas.trials import ensemble_members

        ensemble_members(self, trials, make_folds(self, utterances), utterances)

    @model_validator(mode="after")
    def _no_noise_of_its_own(self) -> GeneticEnsembleSearch:
        if self.noise_snr_db:
            raise ValueError("noise_snr_db: an ensemble reads its members' stored predictions; score noise in theirs")
        return self

    @model_validator(mode="after")
    def _no_augment_of_its_own(self) -> GeneticEnsembleSearch:
        if self.augment is not None:
            raise ValueError("augment: an ensemble trains nothing; augment the searches of its members instead")
        return self

    @model_validator(mode="after")
    def _members_named(self) -> GeneticEnsembleSearch:
        if not self.space.named:
            raise ValueError(
                "name the ensemble's members: space.searches (search ids, or result folders on the command line) "
                "or space.trials (trial ids)"
            )
        return self


def _strategy(value: Any) -> str:
    # Specs written before there was more than one strategy name none: they are darts specs.
    return value.get("strategy", "darts") if isinstance(value, dict) else value.strategy


SearchSpec = Annotated[
    Annotated[DartsSearch, Tag("darts")]
    | Annotated[TpeAshaSearch, Tag("tpe-asha")]
    | Annotated[HyperbandSearch, Tag("hyperband")]
    | Annotated[GeneticEnsembleSearch, Tag("genetic-ensemble")],
    Discriminator(_strategy),
]
AnySearch = DartsSearch | TpeAshaSearch | HyperbandSearch | GeneticEnsembleSearch
SEARCH_SPEC: TypeAdapter[AnySearch] = TypeAdapter(SearchSpec)
STRATEGY_SPECS: dict[str, type[SpecBase]] = {
    "darts": DartsSearch,
    "tpe-asha": TpeAshaSearch,
    "hyperband": HyperbandSearch,
    "genetic-ensemble": GeneticEnsembleSearch,
}


def parse_spec(data: dict[str, Any] | str | bytes) -> AnySearch:
    """A SearchSpec from its JSON (text or parsed); pydantic's ValidationError names bad fields."""
    if isinstance(data, str | bytes):
        return SEARCH_SPEC.validate_json(data)
    return SEARCH_SPEC.validate_python(data)


def spec_from_preset(
    preset: str, corpus: CorpusSpec, overrides: dict[str, Any] | None = None, **fields: Any
) -> AnySearch:
    """The preset's sections with dotted-key overrides, plus the corpus and the shared fields."""
    sections = get_preset(preset).with_overrides(overrides or {}).sections
    try:
        return SEARCH_SPEC.validate_python({**dict(sections), "corpus": corpus, "preset": preset, **fields})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"preset {preset!r}: {problems}") from exc
