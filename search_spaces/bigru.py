"""The BiGRU head family: a stack of bidirectional GRUs over frozen self-supervised frame features.

Ahmadianshalchi et al. (2026) feed frozen DistilHuBERT frames (768 wide, padded or truncated
to 300 frames) through dropout, masking of the padded frames, layer normalisation, one or two
bidirectional GRU layers with L2-regularised weights, and a dense softmax layer. Optuna tunes the
number of layers (1 or 2), the base units (128..256, step 32), the final units (32..128, step 32),
the dropout (0.0..0.5, step 0.05) and the L2 coefficient (0.01..0.03, step 0.003); the units of
each layer are spaced linearly from the base to the final count. Their best ShEMO configuration
(2 layers of 192 and 32 units, dropout 0.2, L2 0.016) is the default here.

This module is torch-free: the network itself is built by `nas.models.bigru_head`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nas.recipe import TrainRecipe
from search_spaces.distributions import CategoricalDistribution, Distribution, FloatDistribution, IntDistribution


class BiGruArchitecture(BaseModel):
    """Dropout -> masking -> LayerNorm -> stacked BiGRU -> dense, after Ahmadianshalchi et al. (2026).

    The defaults are that paper's best configuration on ShEMO. `layers` goes up to 4 here,
    beyond the paper's {1, 2}, which its authors limited for hardware reasons.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["bigru-head"] = "bigru-head"
    layers: int = Field(2, ge=1, le=4, description="number of stacked bidirectional GRU layers")
    base_units: int = Field(192, ge=1, description="units per direction of the first BiGRU layer")
    final_units: int = Field(32, ge=1, description="units per direction of the last BiGRU layer")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on the input frames, before masking")
    l2: float = Field(
        0.016,
        ge=0,
        description="Keras-style L2 on the GRU weight matrices: l2 * sum(w^2) is added to the loss",
    )

    def units(self) -> tuple[int, ...]:
        """Units per direction of each layer: linear spacing from `base_units` to `final_units`.

        As in Ahmadianshalchi et al. (2026): 2 layers 192 -> 32 give (192, 32); 3 layers
        256 -> 32 give (256, 144, 32); a single layer has `base_units`.
        """
        if self.layers == 1:
            return (self.base_units,)
        step = (self.final_units - self.base_units) / (self.layers - 1)
        return tuple(round(self.base_units + k * step) for k in range(self.layers))


# The paper's search space. L2 0.01..0.03 step 0.003 is not a whole number of steps: 0.028 is the
# last point of its grid (Optuna itself would lower `high` to it).
SPACE: dict[str, Distribution] = {
    "layers": IntDistribution(low=1, high=2),
    "base_units": IntDistribution(low=128, high=256, step=32),
    "final_units": IntDistribution(low=32, high=128, step=32),
    "lr": FloatDistribution(low=0.001, high=0.01, step=0.001),
    "dropout": FloatDistribution(low=0.0, high=0.5, step=0.05),
    "l2": FloatDistribution(low=0.01, high=0.028, step=0.003),
    "optimizer": CategoricalDistribution(choices=("adam", "sgd", "rmsprop")),
}

# Training as published: batch 16, up to 150 epochs, early stopping with patience 3 on the
# validation loss, a constant learning rate (Keras' default).
RECIPE = TrainRecipe(
    epochs=150,
    batch_size=16,
    optimizer="adam",
    lr=0.003,
    schedule="constant",
    grad_clip=None,
    patience=3,
    monitor="val_loss",
)
