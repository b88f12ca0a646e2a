"""The prune section of a recipe: ODF2NNA's prune-and-transfer (criterion, epsilon, scope, mean
folding, fine-tuning and the from-scratch control).

The statistics, the choice of units and the transfer are netsize.graph.prune for netsize's own
networks (one unit = one channel or feature of a growable group), and netsize.foreign for
timm/torchvision models; this module holds only their configuration.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from netsize.config import MAX_EPOCHS, MAX_EXAMPLES, MAX_WIDTH, Strict


class PruneConfig(Strict):
    """Prune-and-transfer (ODF2NNA): drop low-scoring units, copy the rest, fine-tune."""

    criterion: Literal["variability", "cv", "magnitude", "taylor"] = "variability"
    # Units scoring below epsilon * (mean score of their group, or of all units if global)
    # are removed. A list tries each value and gives a front over them. For timm/torchvision
    # models each value is instead the share of channels removed (0 < epsilon < 1).
    # None: NATIVE_EPSILONS for netsize's networks, FOREIGN_SHARES for timm/torchvision.
    epsilon: list[Annotated[float, Field(ge=0.0, le=1e6)]] | None = Field(
        None, min_length=1, max_length=1000)
    scope: Literal["layer", "global"] = "layer"
    # keep at least this many units per group (1: no group vanishes, whatever epsilon)
    min_units: int = Field(1, ge=0, le=MAX_WIDTH)
    fold_mean: bool = True  # fold a removed unit's mean into its readers' biases
    finetune_epochs: int = Field(5, ge=0, le=MAX_EPOCHS)
    lr: float | None = Field(None, gt=0.0, le=1e3)  # fine-tuning learning rate (default: train.lr)
    control: bool = True  # also train the pruned architecture from scratch
    # training examples used for unit statistics
    stats_examples: int = Field(2048, ge=1, le=MAX_EXAMPLES)
    latency: bool = True  # time every variant's CPU forward pass (netsize prune --no-latency)

    @field_validator("epsilon", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value

    def epsilons(self, foreign: bool = False) -> list[float]:
        """The epsilons to try: the recipe's, or the defaults for this kind of model."""
        if self.epsilon is not None:
            return list(self.epsilon)
        return list(FOREIGN_SHARES if foreign else NATIVE_EPSILONS)


# Measured by benchmarks/prune_transfer.py (wide 256-256 MLPs, 3 seeds): 1.0 removes 73-75% of
# the parameters with no test loss on iris, wine, breast_cancer and diabetes, digits needs 1.05
# (80%, no loss; 1.0 removes 69% there); 0.5 and 0.8 are the gentle end of the front.
NATIVE_EPSILONS = [0.5, 0.8, 1.0, 1.05]
FOREIGN_SHARES = [0.25, 0.5]  # share of channels removed from a timm/torchvision model
