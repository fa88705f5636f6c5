"""Strategy registry: name -> lazily imported class."""

from __future__ import annotations

import importlib

from nas.errors import UnknownNameError
from nas.strategies.base import SearchStrategy

_REGISTRY = {
    "darts": "nas.strategies.darts:DartsStrategy",
    "tpe-asha": "nas.strategies.tpe_asha:TpeAshaStrategy",
    "hyperband": "nas.strategies.hyperband:HyperbandStrategy",
    "genetic-ensemble": "nas.strategies.genetic_ensemble:GeneticEnsembleStrategy",
}


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str) -> SearchStrategy:
    try:
        module, _, cls = _REGISTRY[name].partition(":")
    except KeyError:
        raise UnknownNameError("strategy", name, list(_REGISTRY)) from None
    return getattr(importlib.import_module(module), cls)()
