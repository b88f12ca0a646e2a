"""netsize: right-size neural networks by growing, pruning and comparing them on one budget.

    from netsize import load_recipe, run_grow
    result = run_grow(load_recipe("recipes/digits.yaml"), "results/my-run")
    print(result.front)
"""

from netsize.io import load_checkpoint
from netsize.recipe import Recipe, derive, load_recipe
from netsize.runs import (
    CompareResult,
    GrowResult,
    PruneResult,
    StudyResult,
    compare_recipe,
    compare_runs,
    load_original,
    run_grow,
    run_prune,
    run_study,
)

__version__ = "0.2.0"

__all__ = ["CompareResult", "GrowResult", "PruneResult", "Recipe", "StudyResult",
           "compare_recipe", "compare_runs", "derive", "load_checkpoint", "load_original",
           "load_recipe", "run_grow", "run_prune", "run_study", "__version__"]
