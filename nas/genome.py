"""Genome: a versioned, torch-free JSON description of a trained-or-trainable network, or of an ensemble.

A network genome (`Genome`, kind "network") holds its input (FeatureSpec), its architecture (discriminated
by `family`), the recipe that retrains it, its classes and where it came from. An ensemble genome
(`EnsembleGenome`, kind "ensemble") holds member network genomes, each with its own input, and the weights
of their averaged class probabilities. `nas.models.build(genome)` rebuilds either (`nas.darts.genotype`
reads pt.darts' `Genotype(...)` text); `parse_genome` reads either from JSON. Version 1 genomes (search
options instead of a recipe) are read and converted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

from nas.features.spec import FeatureSpec
from nas.recipe import TrainRecipe
from search_spaces.bigru import BiGruArchitecture
from search_spaces.cnn_lstm import Cnn1dLstmArchitecture, Cnn2dLstmArchitecture, FusedCnnLstmArchitecture
from search_spaces.cnn_transformer import CnnTransformerArchitecture
from search_spaces.darts import CNN_OPS, SEQ_OPS
from search_spaces.hmoe_simba import HmoeSimbaArchitecture
from search_spaces.lstm_cnn import LstmCnnArchitecture
from search_spaces.macnn import MacnnArchitecture

SCHEMA_VERSION = 2
SEQ_COLLAPSE_FLAG = "seq_collapsed_to_skip_connect"


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    op: str
    input: int = Field(ge=0, description="0, 1: the two cell inputs; k >= 2: intermediate node k - 2")


class CellGenotype(BaseModel):
    """One discrete cell: the incoming edges of each intermediate node, and which nodes are output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]

    @model_validator(mode="after")
    def _wired(self) -> CellGenotype:
        for i, edges in enumerate(self.nodes):
            if not edges:
                raise ValueError(f"node {i + 2} has no incoming edge")
            for edge in edges:
                if edge.input >= i + 2:
                    raise ValueError(f"node {i + 2} takes input {edge.input}, which is not an earlier state")
                if edge.op == "none":
                    raise ValueError(f"node {i + 2} keeps a 'none' edge; derived cells never keep 'none'")
        bad = [c for c in self.concat if not 2 <= c < len(self.nodes) + 2]
        if bad or not self.concat:
            raise ValueError(f"concat {list(self.concat)} must name intermediate nodes 2..{len(self.nodes) + 1}")
        return self

    def ops(self) -> list[str]:
        return [edge.op for edges in self.nodes for edge in edges]


def _check_ops(cell: CellGenotype | None, valid: tuple[str, ...], where: str) -> None:
    if cell is None:
        return
    unknown = sorted(set(cell.ops()) - set(valid))
    if unknown:
        raise ValueError(f"{where} cell uses unknown ops {unknown}; valid: {', '.join(valid)}")


class EmoDartsArchitecture(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["emodarts"] = "emodarts"
    cnn_cells: int = Field(ge=1)
    init_channels: int = Field(ge=1)
    stem_multiplier: int = Field(3, ge=1)
    seq_cells: int = Field(ge=0)
    seq_hidden: int = Field(ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    normal: CellGenotype
    reduce: CellGenotype
    seq: CellGenotype | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EmoDartsArchitecture:
        _check_ops(self.normal, CNN_OPS, "normal")
        _check_ops(self.reduce, CNN_OPS, "reduce")
        _check_ops(self.seq, SEQ_OPS, "seq")
        if (self.seq_cells > 0) != (self.seq is not None):
            raise ValueError("give a seq cell exactly when seq_cells > 0")
        return self

    @property
    def reduction_cells(self) -> tuple[int, ...]:
        return tuple(sorted({self.cnn_cells // 3, 2 * self.cnn_cells // 3}))

    def flags(self) -> list[str]:
        if self.seq is not None and set(self.seq.ops()) == {"skip_connect"}:
            return [SEQ_COLLAPSE_FLAG]
        return []


class CnnBiLstmAttArchitecture(BaseModel):
    """The emoDARTS paper's hand-designed baselines: CNN, + BiLSTM(128), + attention."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["cnn-bilstm-att"] = "cnn-bilstm-att"
    conv_channels: tuple[int, ...] = (32, 64)
    lstm_hidden: int | None = Field(128, ge=1, description="None: the CNN-only baseline")
    attention: bool = True
    dense: int = Field(64, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)


Architecture = Annotated[
    EmoDartsArchitecture
    | CnnBiLstmAttArchitecture
    | BiGruArchitecture
    | Cnn2dLstmArchitecture
    | Cnn1dLstmArchitecture
    | FusedCnnLstmArchitecture
    | LstmCnnArchitecture
    | CnnTransformerArchitecture
    | MacnnArchitecture
    | HmoeSimbaArchitecture,
    Field(discriminator="family"),
]


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    search_id: str | None = None
    trial_id: int | None = None
    fold: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class Genome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = SCHEMA_VERSION
    kind: Literal["network"] = "network"
    input: FeatureSpec
    architecture: Architecture
    classes: tuple[str, ...] = Field(min_length=2)
    training: TrainRecipe = Field(default_factory=TrainRecipe, description="how to retrain the network")
    provenance: Provenance = Field(default_factory=Provenance)
    flags: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.architecture.family

    @model_validator(mode="before")
    @classmethod
    def _read_version_1(cls, data: Any) -> Any:
        """Version 1 kept the darts search options as `hyperparameters`; its retraining settings become the recipe."""
        if not (isinstance(data, dict) and data.get("schema_version") == 1):
            return data
        data = dict(data)
        options = data.pop("hyperparameters", None) or {}
        recipe = {field: options[key] for field, key in _VERSION_1_RECIPE.items() if key in options}
        return {**data, "schema_version": SCHEMA_VERSION, "training": {"optimizer": "sgd", **recipe}}


# TrainRecipe field -> the darts option a version 1 genome named it by.
_VERSION_1_RECIPE = {
    "epochs": "train_epochs",
    "batch_size": "batch_size",
    "lr": "w_lr",
    "lr_min": "w_lr_min",
    "momentum": "w_momentum",
    "weight_decay": "w_weight_decay",
    "grad_clip": "w_grad_clip",
    "patience": "patience",
}


class EnsembleGenome(BaseModel):
    """Member networks whose class probabilities are averaged with fixed weights (summing to 1)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = SCHEMA_VERSION
    kind: Literal["ensemble"] = "ensemble"
    members: tuple[Genome, ...] = Field(min_length=1)
    weights: tuple[float, ...]
    provenance: Provenance = Field(default_factory=Provenance)

    @property
    def family(self) -> str:
        return "ensemble"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].classes

    @property
    def flags(self) -> tuple[str, ...]:
        return ()

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleGenome:
        if len(self.weights) != len(self.members):
            raise ValueError(f"{len(self.weights)} weights for {len(self.members)} members")
        if any(w < 0 for w in self.weights) or abs(sum(self.weights) - 1) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1, got {list(self.weights)}")
        strangers = [i for i, m in enumerate(self.members) if m.classes != self.classes]
        if strangers:
            raise ValueError(f"members {strangers} predict other classes than member 0 {list(self.classes)}")
        return self


def _kind(value: Any) -> str:
    # Genomes written before ensembles existed name no kind: they are networks.
    return value.get("kind", "network") if isinstance(value, dict) else value.kind


AnyGenome = Genome | EnsembleGenome
_ANY_GENOME: TypeAdapter[AnyGenome] = TypeAdapter(
    Annotated[Annotated[Genome, Tag("network")] | Annotated[EnsembleGenome, Tag("ensemble")], Discriminator(_kind)]
)


def parse_genome(text: str | bytes) -> AnyGenome:
    """A network or ensemble genome from its JSON."""
    return _ANY_GENOME.validate_json(text)
