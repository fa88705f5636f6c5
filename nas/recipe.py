"""TrainRecipe: how a genome's network is trained, stored in the genome so it can be retrained anywhere.

Torch-free plain data; `nas.train.TrainConfig.of(recipe, seed)` turns it into the loop's settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(100, ge=1, description="most epochs to train")
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    lr: float = Field(0.025, gt=0)
    lr_min: float = Field(0.0, ge=0, description="the cosine schedule's final lr")
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = Field(10, ge=1, description="step schedule: multiply the lr by gamma every step_size epochs")
    gamma: float = Field(0.9, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(5.0, gt=0, description="max global grad norm; None: no clipping")
    patience: int | None = Field(None, ge=1, description="epochs without a better monitored value before stopping")
    monitor: Literal["val_ua", "val_loss"] = Field(
        "val_ua", description="what picks the best epoch and runs out the patience"
    )
