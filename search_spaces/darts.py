"""The emoDARTS space: a CNN component and a sequential component searched jointly."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nas.features.spec import FeatureSpec, Mfcc

CnnOp = Literal[
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_7x1_1x7",
]
SeqOp = Literal[
    "none",
    "skip_connect",
    "rnn_1",
    "rnn_2",
    "rnn_3",
    "rnn_4",
    "rnn_att_1",
    "rnn_att_2",
    "lstm_1",
    "lstm_2",
    "lstm_3",
    "lstm_4",
    "lstm_att_1",
    "lstm_att_2",
]
CNN_OPS: tuple[str, ...] = get_args(CnnOp)
SEQ_OPS: tuple[str, ...] = get_args(SeqOp)


class EmoDartsSpace(BaseModel):
    """Defaults are the paper's (Rajapakshe et al., 2024) except `init_channels`: 8 rather than the
    paper's 16 (not stated in the paper's text; 8 halves memory and fits a CPU machine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["emodarts"] = "emodarts"
    cnn_ops: tuple[CnnOp, ...] = CNN_OPS
    seq_ops: tuple[SeqOp, ...] = SEQ_OPS
    cnn_cells: int = Field(4, ge=1, le=20, description="reduction cells sit at 1/3 and 2/3 of the depth")
    seq_cells: int = Field(2, ge=0, le=8, description="0 searches the CNN component alone")
    nodes: int = Field(4, ge=1, le=8, description="intermediate nodes per cell")
    init_channels: int = Field(8, ge=2, le=64, description="channels of the first cell")
    stem_multiplier: int = Field(3, ge=1, le=8)
    seq_hidden: int = Field(64, ge=4, le=1024, description="width of every SeqNN cell state (B, T, H)")
    partial_channels: int = Field(
        1, ge=1, le=8, description="PC-DARTS: only 1/K of the channels pass through mixed CNN ops"
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="before the classifier")

    @field_validator("cnn_ops", "seq_ops")
    @classmethod
    def _usable(cls, ops: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops must be unique, got {list(ops)}")
        if not set(ops) - {"none"}:
            raise ValueError("give at least one op other than 'none'")
        return ops

    @property
    def reduction_cells(self) -> tuple[int, ...]:
        """Indices of the stride-2 cells (pt.darts places them at 1/3 and 2/3 of the depth)."""
        return tuple(sorted({self.cnn_cells // 3, 2 * self.cnn_cells // 3}))


class DartsOptions(BaseModel):
    """How an emoDARTS search is run: bilevel search, then retraining of the derived genome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    second_order: bool = Field(True, description="unrolled (second-order) architecture gradient")
    search_epochs: int = Field(300, ge=1)
    train_epochs: int = Field(300, ge=1, description="epochs to retrain the derived model")
    patience: int | None = Field(
        50, ge=1, description="stop retraining after this many epochs without validation UA gain"
    )
    batch_size: int = Field(16, ge=1)
    w_lr: float = Field(0.025, gt=0)
    w_lr_min: float = Field(0.001, ge=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(3e-4, ge=0)
    w_grad_clip: float = Field(5.0, gt=0)
    arch_lr: float = Field(3e-4, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)
    search_fraction: float = Field(
        0.7, gt=0, lt=1, description="share of a fold's training pool used for the search (rest: retrain)"
    )
    validation_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of the retraining set held out for early stopping"
    )
    memory_limit_gb: float | None = Field(
        None, gt=0, description="refuse searches estimated above this; default: the memory available now"
    )


class DartsSections(BaseModel):
    """The strategy-specific part of a darts search (and of a darts preset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["darts"] = "darts"
    space: EmoDartsSpace = EmoDartsSpace()
    features: FeatureSpec = FeatureSpec()
    options: DartsOptions = DartsOptions()

    @model_validator(mode="after")
    def _maps(self) -> DartsSections:
        if self.features.layout != "map":
            raise ValueError("features: the emoDARTS supernet reads (1, F, T) maps; set features.layout to 'map'")
        return self


_SEQ_SCOPES = {
    "emodarts-lstm-only": ("LSTM only", ("lstm_1", "lstm_2", "lstm_3", "lstm_4")),
    "emodarts-lstm-att-only": ("LSTM-Att only", ("lstm_att_1", "lstm_att_2")),
    "emodarts-rnn-only": ("RNN only", ("rnn_1", "rnn_2", "rnn_3", "rnn_4")),
    "emodarts-rnn-att-only": ("RNN-Att only", ("rnn_att_1", "rnn_att_2")),
}

# name -> (description, sections)
PRESETS: dict[str, tuple[str, DartsSections]] = {
    "emodarts": (
        "emoDARTS as published: 4 CNN cells + 2 SeqNN cells, 4 nodes, every op, 300 epochs",
        DartsSections(),
    ),
    **{
        # As in the reference code, restricted scopes keep skip_connect and none.
        name: (
            f"emoDARTS with the SeqNN scope restricted to {title}",
            DartsSections(space=EmoDartsSpace(seq_ops=(*ops, "skip_connect", "none"))),
        )
        for name, (title, ops) in _SEQ_SCOPES.items()
    },
    "emodarts-cnn-only": (
        "emoDARTS CNN component alone (C = 4), the paper's CNN-only ablation",
        DartsSections(space=EmoDartsSpace(seq_cells=0)),
    ),
    "emodarts-demo": (
        "A CPU-sized emoDARTS (3 small CNN cells, 1 SeqNN cell, 2 nodes, 40 MFCC at 64 x 64, "
        "first order, few epochs) that runs the whole protocol in minutes",
        DartsSections(
            space=EmoDartsSpace(cnn_cells=3, seq_cells=1, nodes=2, init_channels=4, seq_hidden=32),
            features=FeatureSpec(frontends=(Mfcc(n_mfcc=40),), duration_s=4.0, pool_to=(40, 64)),
            options=DartsOptions(second_order=False, search_epochs=8, train_epochs=30, patience=10),
        ),
    ),
}
