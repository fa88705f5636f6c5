"""Model families whose hyperparameters a hyperparameter strategy (tpe-asha, hyperband) can search.

Each family declares its architecture model, its default searchable space (typed distributions)
and its default training recipe. A sampled configuration names architecture fields and recipe
fields side by side (`layers`, `lr`, ...); `realise` sorts them into the genome's two parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from nas.errors import ConfigError, UnknownNameError
from nas.recipe import TrainRecipe
from search_spaces import bigru, cnn_lstm, cnn_transformer, hmoe_simba, lstm_cnn, macnn
from search_spaces.distributions import Distribution


@dataclass(frozen=True)
class SearchableFamily:
    architecture: type[BaseModel]
    space: Mapping[str, Distribution]
    recipe: TrainRecipe
    layout: Literal["map", "frames"]  # what its networks read: (1, F, T) maps or (T, D) frame sequences

    def names(self) -> set[str]:
        """Every hyperparameter a space or a fixed value may name."""
        return (set(self.architecture.model_fields) - {"family"}) | set(TrainRecipe.model_fields)


FAMILIES: dict[str, SearchableFamily] = {
    "bigru-head": SearchableFamily(bigru.BiGruArchitecture, bigru.SPACE, bigru.RECIPE, "frames"),
    "cnn2d-lstm": SearchableFamily(cnn_lstm.Cnn2dLstmArchitecture, cnn_lstm.SPACE_2D, cnn_lstm.RECIPE, "map"),
    "cnn1d-lstm": SearchableFamily(cnn_lstm.Cnn1dLstmArchitecture, cnn_lstm.SPACE_1D, cnn_lstm.RECIPE, "map"),
    "cnn-lstm-fused": SearchableFamily(cnn_lstm.FusedCnnLstmArchitecture, cnn_lstm.SPACE_1D, cnn_lstm.RECIPE, "map"),
    "lstm-cnn": SearchableFamily(lstm_cnn.LstmCnnArchitecture, lstm_cnn.SPACE, cnn_lstm.RECIPE, "map"),
    "cnn-transformer": SearchableFamily(
        cnn_transformer.CnnTransformerArchitecture, cnn_transformer.SPACE, cnn_lstm.RECIPE, "map"
    ),
    "macnn-icasa": SearchableFamily(macnn.MacnnArchitecture, macnn.SPACE, macnn.RECIPE, "frames"),
    "hmoe-simba": SearchableFamily(hmoe_simba.HmoeSimbaArchitecture, hmoe_simba.SPACE, hmoe_simba.RECIPE, "frames"),
}


# A name of FAMILIES, as a type: spaces validate and document the families they may search with it.
FamilyName = Literal[tuple(FAMILIES)]


LAYOUTS = {"map": "(F, T) maps", "frames": "(T, D) frame sequences"}


def check_layout(families: tuple[str, ...], layout: str) -> None:
    """Refuse features whose layout some of `families` cannot read, naming them and what they read."""
    misfits = [
        f"{name} reads {LAYOUTS[get_family(name).layout]}" for name in families if get_family(name).layout != layout
    ]
    if misfits:
        raise ValueError(f"features: the layout is {layout!r}, but {', '.join(misfits)}; set features.layout to match")


def get_family(name: str) -> SearchableFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownNameError("searchable model family", name, list(FAMILIES)) from None


def realise(family: str, values: Mapping[str, Any]) -> tuple[BaseModel, TrainRecipe]:
    """(architecture, recipe) of one configuration; what it leaves out keeps the family's defaults."""
    entry = get_family(family)
    unknown = sorted(set(values) - entry.names())
    if unknown:
        raise ConfigError(
            f"{family} has no hyperparameter {', '.join(unknown)}; valid: {', '.join(sorted(entry.names()))}"
        )
    arch_fields = set(entry.architecture.model_fields)
    try:
        architecture = entry.architecture(**{k: v for k, v in values.items() if k in arch_fields})
        recipe = TrainRecipe.model_validate(
            entry.recipe.model_dump() | {k: v for k, v in values.items() if k not in arch_fields}
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{family} configuration {dict(values)}: {problems}") from exc
    return architecture, recipe
