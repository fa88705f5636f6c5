"""Named starting points: a strategy's sections (space, features, options), for every strategy.

A preset is plain data; `Preset.with_overrides` applies dotted-key overrides
(`space.nodes=2`, `options.search_epochs=5`, `features.pool_to=[64, 64]`) and re-validates
through the same union as search specs, so a bad override fails with the field's name and the reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from nas.errors import ConfigError, UnknownNameError
from search_spaces import darts, genetic_ensemble, hyperband, tpe_asha

AnySections = (
    darts.DartsSections
    | tpe_asha.TpeAshaSections
    | hyperband.HyperbandSections
    | genetic_ensemble.GeneticEnsembleSections
)
Sections = Annotated[AnySections, Field(discriminator="strategy")]
SECTIONS: TypeAdapter[AnySections] = TypeAdapter(Sections)
SECTION_NAMES = ("space", "features", "options")


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    sections: Sections

    @property
    def strategy(self) -> str:
        return self.sections.strategy

    def with_overrides(self, overrides: dict[str, Any]) -> Preset:
        data = self.sections.model_dump(mode="json")
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in SECTION_NAMES or not key:
                raise ConfigError(
                    f"override {dotted!r}: write it as space.<field>, features.<field> or options.<field>"
                )
            if section not in data:
                raise ConfigError(f"override {dotted!r}: preset {self.name!r} has no {section} section")
            node = data[section]
            parts = dotted.split(".")
            for depth, part in enumerate(parts[1:-1], start=2):
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    whole = ".".join(parts[:depth])
                    raise ConfigError(
                        f"override {dotted!r}: {whole} is a single value, not a group of fields; "
                        f"set it whole, e.g. {{{whole!r}: ...}}"
                    )
            node[parts[-1]] = value
        try:
            return self.model_copy(update={"sections": SECTIONS.validate_python(data)})
        except ValidationError as exc:
            raise ConfigError(f"invalid override for preset {self.name!r}: {_explain(exc)}") from exc


def _explain(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())


PRESETS: dict[str, Preset] = {
    name: Preset(name=name, description=description, sections=sections)
    for module in (darts, tpe_asha, hyperband, genetic_ensemble)
    for name, (description, sections) in module.PRESETS.items()
}


def default_preset(strategy: str) -> str:
    """The first preset of a strategy: the published configuration."""
    for preset in PRESETS.values():
        if preset.strategy == strategy:
            return preset.name
    raise UnknownNameError("strategy", strategy, sorted({p.strategy for p in PRESETS.values()}))


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError("preset", name, list(PRESETS)) from None
