"""The base of every config section, and the documented upper bounds on sizes and counts.

Each component owns its config class beside the code that reads it (data.py, architecture.py,
train.py, growth.py, prune.py, search/config.py, compare.py); `netsize.recipe` composes them.
Configs are strict: unknown keys are refused, and `true` or `1.0` is not an integer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Upper bounds checked by the schema (a recipe past them is refused with the key named). They
# are far above what these tools are for, and low enough that no single value can ask for more
# memory than a machine has; the memory estimate at the start of a run checks their product.
MAX_WIDTH = 65_536  # units or channels of one layer
MAX_LAYERS = 512  # hidden layers (all stages of a CNN together)
MAX_EPOCHS = 100_000
MAX_STEPS = 10**9  # step counts in schedules and intervals
MAX_BATCH = 1_000_000
MAX_EXAMPLES = 10_000_000  # examples drawn or generated
MAX_FEATURES = 1_000_000
MAX_PARAMS = 10**10
MAX_SEED = 2**32 - 1  # numpy and torch both take seeds in [0, 2^32)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
