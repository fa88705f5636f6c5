"""Named starting points: a strategy with its space, features and options.

A preset is plain data; `Preset.with_overrides` applies dotted-key overrides
(`space.nodes=2`, `options.search_epochs=5`, `features.pool_to=[64, 64]`) and re-validates,
so a bad override fails with the field's name and the reason.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from nas.errors import ConfigError, UnknownNameError
from nas.features.spec import FeatureSpec, Mfcc
from search_spaces.darts import DartsOptions, EmoDartsSpace


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    strategy: str
    space: EmoDartsSpace
    features: FeatureSpec = FeatureSpec()
    options: DartsOptions = DartsOptions()

    def with_overrides(self, overrides: dict[str, Any]) -> Preset:
        data = self.model_dump(mode="json")
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in ("space", "features", "options") or not key:
                raise ConfigError(
                    f"override {dotted!r}: write it as space.<field>, features.<field> or options.<field>"
                )
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
            return Preset.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid override for preset {self.name!r}: {_explain(exc)}") from exc


def _explain(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


_SEQ_SCOPES = {
    "emodarts-lstm-only": ("LSTM only", ("lstm_1", "lstm_2", "lstm_3", "lstm_4")),
    "emodarts-lstm-att-only": ("LSTM-Att only", ("lstm_att_1", "lstm_att_2")),
    "emodarts-rnn-only": ("RNN only", ("rnn_1", "rnn_2", "rnn_3", "rnn_4")),
    "emodarts-rnn-att-only": ("RNN-Att only", ("rnn_att_1", "rnn_att_2")),
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="emodarts",
            description="emoDARTS as published: 4 CNN cells + 2 SeqNN cells, 4 nodes, every op, 300 epochs",
            strategy="darts",
            space=EmoDartsSpace(),
        ),
        *[
            Preset(
                name=name,
                description=f"emoDARTS with the SeqNN scope restricted to {title}",
                strategy="darts",
                # As in the reference code, restricted scopes keep skip_connect and none.
                space=EmoDartsSpace(seq_ops=(*ops, "skip_connect", "none")),
            )
            for name, (title, ops) in _SEQ_SCOPES.items()
        ],
        Preset(
            name="emodarts-cnn-only",
            description="emoDARTS CNN component alone (C = 4), the paper's CNN-only ablation",
            strategy="darts",
            space=EmoDartsSpace(seq_cells=0),
        ),
        Preset(
            name="emodarts-demo",
            description="A CPU-sized emoDARTS (3 small CNN cells, 1 SeqNN cell, 2 nodes, 40 MFCC at 64 x 64, "
            "first order, few epochs) that runs the whole protocol in minutes",
            strategy="darts",
            space=EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=4, seq_hidden=32),
            features=FeatureSpec(frontends=(Mfcc(n_mfcc=40),), duration_s=4.0, pool_to=(40, 64)),
            options=DartsOptions(second_order=False, search_epochs=8, train_epochs=30, patience=10),
        ),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError("preset", name, list(PRESETS)) from None
