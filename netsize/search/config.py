"""The search section of a recipe: the searched keys, the sampler, early stopping, workers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from netsize.config import MAX_EPOCHS, MAX_PARAMS, MAX_SEED, Strict


class ParamSpace(Strict):
    """One searched recipe key: float/int in [low, high] (log scale optional), or choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = Field(None, max_length=10_000)

    @model_validator(mode="after")
    def _complete(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("a float or int parameter needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self


class EarlyStoppingConfig(Strict):
    """Stop a trial whose validation metric after an epoch is below the median of the completed
    trials at that epoch (the median stopping rule on the metric objective)."""

    enabled: bool = True
    min_epochs: int = Field(3, ge=1, le=MAX_EPOCHS)  # never stop before this many epochs
    min_trials: int = Field(3, ge=1, le=100_000)  # completed trials needed before stopping any


class SearchConfig(Strict):
    # completed trials wanted in the study (across all workers)
    trials: int = Field(8, ge=1, le=100_000)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    sampler_seed: int = Field(0, ge=0, le=MAX_SEED)
    space: dict[str, ParamSpace] = {}  # dotted recipe key -> range
    flops_objective: bool = False  # minimise FLOPs as a third objective
    max_params: int | None = Field(None, ge=1, le=MAX_PARAMS)  # constraint: params <= max_params
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    # a worker silent 3x this long has its trial retried
    heartbeat_seconds: int = Field(10, ge=1, le=86_400)
    max_retries: int = Field(2, ge=0, le=1000)
