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
    precise_bn: bool = Field(
        False,
        description="before each validation, recompute the BatchNorm statistics over the training rows with the "
        "epoch's final weights (precise BN, Wu & Johnson, 2021): running averages of batch statistics lag behind "
        "weights that still move fast, and the network then scores differently in evaluation than in training",
    )
    mixup: Literal["none", "aam"] = Field(
        "none",
        description="training-batch augmentation: none, or adaptive acoustic mixup (Li et al., 2026), which appends "
        "difficulty-weighted mixes of acoustically similar pairs with soft labels; never applied to evaluation",
    )
    mixup_threshold: float = Field(
        0.7,
        allow_inf_nan=False,
        description="aam: cosine similarity a pair must exceed to be mixed (Li et al., 2026: 0.7); "
        "above 1 nothing is mixed, below -1 every pair qualifies (their random-pairing ablation)",
    )
    mixup_alpha: float = Field(
        2.0,
        ge=0,
        allow_inf_nan=False,
        description="aam: sensitivity of the mixing coefficient to the pair's difficulty difference "
        "(Li et al., 2026: 2); 0 mixes every pair half and half (their no-difficulty ablation)",
    )
