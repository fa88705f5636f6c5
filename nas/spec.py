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
    ValidationInfo,
    field_validator,
    model_validator,
)

from nas.augment.waveform import AudioAugment
from nas.errors import ConfigError, DataError, ResourceError

if TYPE_CHECKING:
    from nas.darts.footprint import MemoryEstimate
    from nas.data.folds import Fold
    from nas.data.types import Utterance
    from nas.trials import TrialSource
from search_spaces.darts import DartsSections
from search_spaces.genetic_ensemble import GeneticEnsembleSections
from search_spaces.hyperband import HyperbandSections
from search_spaces.presets import get_preset
from search_spaces.tpe_asha import TpeAshaSections


class SpecFieldError(ConfigError):
    """A spec that cannot run on its inputs, because of the field at dotted path `field` (e.g. folds.n_folds)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SpecResourceError(SpecFieldError, ResourceError):
    """A search that needs more than its spec allows (e.g. memory above `options.memory_limit_gb`), because of
    the field at dotted path `field`: refused as a field of the spec at submission, as a resource by a runner."""


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

    @field_validator("only")
    @classmethod
    def _only_existing(cls, only: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        # Session folds are counted from the corpus: SpecBase.check_inputs checks those.
        n_folds = info.data.get("n_folds")
        if only is None or info.data.get("by") != "speaker" or n_folds is None:
            return only
        unknown = sorted(i for i in only if not 0 <= i < n_folds)
        if unknown:
            raise ValueError(
                f"only names folds {unknown}, but there are only folds 0..{n_folds - 1}: "
                f"name folds in 0..{n_folds - 1}, or raise n_folds"
            )
        return only


Objective = Literal["ua", "wa", "macro_f1"]


class SpecBase(BaseModel):
    """What every search has, whatever its strategy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: CorpusSpec
    folds: FoldSpec = FoldSpec()
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads of the process that runs the search (trials in their own workers use "
        "the strategy's trial_cpus): the figures are reproducible for one torch build and thread count, not across "
        "them; None: the machine's or the worker's count, recorded in metrics.json",
    )
    gpus: float = Field(
        0, ge=0, validate_default=True, description="GPUs reserved for the search (Ray sets CUDA_VISIBLE_DEVICES)"
    )
    preset: str | None = Field(None, description="the preset this spec was built from, for the record")
    objective: Objective = Field(
        "ua", description="the validation metric that chooses among candidates (test scores never choose)"
    )
    noise_snr_db: tuple[float, ...] = Field(
        (),
        description="also score each fold's test rows with white Gaussian noise at these SNRs in dB, e.g. "
        "[20, 10, 0] as Li et al. (2026); networks only (an ensemble's members carry their own)",
    )
    calibrate: bool = Field(
        True,
        description="fit a temperature on each model's validation speakers (Guo et al., 2017) so that its confidence "
        "matches its accuracy; the predicted class never changes, and calibration is reported before and after",
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

    @field_validator("gpus")
    @classmethod
    def _device_has_gpus(cls, gpus: float, info: ValidationInfo) -> float:
        # Ray hides every GPU from a task that reserves none (empty CUDA_VISIBLE_DEVICES): cuda fails there.
        if info.data.get("device") == "cuda" and gpus == 0:
            raise ValueError("device 'cuda' reserves no GPU: set gpus to 1 (or more), or device 'auto'")
        return gpus

    def search_gpus(self) -> float:
        """GPUs the search's own task holds (strategies whose trials are Ray tasks of their own hold none)."""
        return self.gpus

    def search_cpus(self, share: float) -> float:
        """CPUs the search's own task holds, given its `share` of the cluster."""
        return share

    def node_demands(self) -> dict[str, tuple[str, float]]:
        """What the largest single Ray task of this search asks of one node: Ray resource -> (the spec field
        that sets it, amount). Its CPUs are not here: the dispatcher sizes them to fit the largest node."""
        return {"GPU": ("gpus", self.gpus)}

    def memory_refusal(self, node_bytes: float) -> tuple[str, str] | None:
        """(spec field, why and what to do) when the search's own task needs more memory than a node with
        `node_bytes` of it (Ray's `memory` resource) has; None when it fits, or when the strategy cannot tell
        without running (the default)."""
        return None

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        """Refuse (ConfigError; SpecFieldError naming the field to fix) a search that cannot run on the corpus's
        selected utterances (no audio decoded) or on its inputs from earlier searches; the service's
        controller calls it at submission, in milliseconds. Every search must be able to make its folds."""
        self.folds_of(utterances)

    def folds_of(self, utterances: Sequence[Utterance]) -> list[Fold]:
        """The folds this search runs (`make_folds`), or a SpecFieldError naming the `folds` field to fix."""
        from nas.data.folds import make_folds

        folds = self.folds
        speakers = len({u.speaker for u in utterances})
        if folds.by == "speaker" and folds.n_folds > speakers:
            raise SpecFieldError(
                "folds.n_folds",
                f"folds.n_folds {folds.n_folds} needs as many speakers, but the corpus has {speakers}: "
                f"use at most {speakers} folds, or select more speakers",
            )
        try:
            return make_folds(self, utterances)
        except ConfigError as exc:  # folds.only names a fold the corpus's sessions do not make
            raise SpecFieldError("folds.only", str(exc)) from None
        except DataError as exc:  # e.g. session folds on a corpus without sessions
            raise SpecFieldError("folds.by", f"folds.by {folds.by!r}: {exc}") from None


# More labels than any supported corpus has: sizes a classifier when the class count is not known yet.
MAX_CLASSES = 16


class DartsSearch(SpecBase, DartsSections):
    """emoDARTS (Rajapakshe et al., 2024): a CNN + SeqNN supernet searched by DARTS, per fold."""

    def memory_estimate(self, n_classes: int) -> MemoryEstimate:
        """The supernet's memory for a search step (`nas.darts.footprint`: counted from the shape, microseconds)."""
        from nas.darts.footprint import estimate_search_memory

        options = self.options
        return estimate_search_memory(
            self.space, self.features.output_shape, n_classes, options.batch_size, options.second_order
        )

    def memory_refusal(self, node_bytes: float) -> tuple[str, str] | None:
        if self.gpus > 0 and self.device != "cpu":  # on the GPU: the worker judges it against the GPU it gets
            return None
        from nas.darts.footprint import check_fits

        # The classes size only the classifier (kilobytes): without a class list, an upper bound does.
        n_classes = len(self.corpus.classes) if self.corpus.classes else MAX_CLASSES
        try:
            check_fits(self.memory_estimate(n_classes), int(node_bytes), "on the largest node of the Ray cluster")
        except ResourceError as exc:
            return "options.batch_size", f"options.batch_size: {exc}"
        return None

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        from nas.darts.footprint import GB, check_fits
        from nas.data.folds import darts_split

        options = self.options
        if options.memory_limit_gb is not None:  # the worker refuses a search above it: so does submission
            classes = len({u.label for u in utterances})
            try:
                check_fits(self.memory_estimate(classes), int(options.memory_limit_gb * GB), "allowed")
            except ResourceError as exc:
                raise SpecResourceError("options.memory_limit_gb", f"options.memory_limit_gb: {exc}") from None
        # Each fold's training pool is cut by utterance, stratified by class (`darts_split`): a class too
        # thin in some fold fails that fold. The cut needs labels and indices only, so it is checked here.
        for fold in self.folds_of(utterances):
            pool = fold.train_indices(utterances)
            try:
                darts_split(
                    utterances, pool, self.seed + fold.index, options.search_fraction, options.validation_fraction
                )
            except DataError as exc:
                raise SpecFieldError("folds", f"fold {fold.index}: {exc}") from None


class TpeAshaSearch(SpecBase, TpeAshaSections):
    """Optuna TPE with successive-halving pruning over a family's hyperparameters (Ahmadianshalchi et al., 2026)."""

    gpus: float = Field(
        0, ge=0, validate_default=True, description="GPUs of each trial (a Ray task of its own; the search holds none)"
    )

    def search_gpus(self) -> float:
        # Ray releases a blocked task's CPUs but keeps its GPUs: a driver holding the GPU its
        # trials ask for would wait on them forever.
        return 0

    def node_demands(self) -> dict[str, tuple[str, float]]:
        return {"GPU": ("gpus", self.gpus), "CPU": ("options.trial_cpus", self.options.trial_cpus)}

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        _check_holdout_speakers(self, self.folds_of(utterances))


class HyperbandSearch(SpecBase, HyperbandSections):
    """Hyperband (Ray Tune) over the CNN-LSTM, LSTM-CNN and CNN-Transformer families (Serra, LoopQPrize 2022)."""

    gpus: float = Field(
        0,
        ge=0,
        validate_default=True,
        description="GPUs of each trial (a Ray Tune trial of its own; the search holds none)",
    )

    def search_gpus(self) -> float:
        return 0  # as for tpe-asha: the trials hold the GPUs

    def search_cpus(self, share: float) -> float:
        # Tune's trials are Ray actors with `trial_cpus` each; a driver holding CPUs too would leave them
        # pending forever on a machine it fills (2 CPUs: the driver's 2 and no trial ever starts).
        return 0

    def node_demands(self) -> dict[str, tuple[str, float]]:
        return {"GPU": ("gpus", self.gpus), "CPU": ("options.trial_cpus", self.options.trial_cpus)}

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        _check_holdout_speakers(self, self.folds_of(utterances))


class GeneticEnsembleSearch(SpecBase, GeneticEnsembleSections):
    """A genetic algorithm that weights an ensemble of finished fold models of any strategy (Serra, LoopQPrize
    2022). Its corpus, folds and seed must be those of its members' searches."""

    objective: Objective = Field(
        "macro_f1", description="the validation metric the weights are evolved on (the paper's: macro-F1)"
    )

    def check_inputs(self, trials: TrialSource, utterances: Sequence[Utterance]) -> None:
        from nas.trials import ensemble_members

        ensemble_members(self, trials, self.folds_of(utterances), utterances)

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


def _check_holdout_speakers(spec: TpeAshaSearch | HyperbandSearch, folds: Sequence[Fold]) -> None:
    """Trials judged on held-out training speakers (`nas.strategies.protocol.holdout_speakers`) need a fold
    that trains on at least 2 speakers: one to train on, one to judge on."""
    for fold in folds:
        if len(fold.train_speakers) < 2:
            field = "folds.n_folds" if spec.folds.by == "speaker" else "folds.by"
            raise SpecFieldError(
                field,
                f"fold {fold.index} trains on {len(fold.train_speakers)} speaker(s), but {spec.strategy} judges "
                "its trials on held-out training speakers and needs at least 2: use fewer folds, or select more "
                "speakers",
            )


def _strategy(value: Any) -> str:
    # Specs written before there was more than one strategy name none: they are darts specs. Something
    # that is no spec at all (a list, a number) is judged as one too, so its error says what a spec is.
    if isinstance(value, dict):
        return value.get("strategy", "darts")
    return getattr(value, "strategy", "darts")


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
