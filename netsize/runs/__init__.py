"""The pipelines behind the commands: a recipe and options in, a run folder and a typed result
out. The CLI, the benchmarks and the tests all call these."""

from netsize.runs.compare import CompareResult, compare_recipe, compare_runs
from netsize.runs.grow import GrowResult, run_grow
from netsize.runs.prune import Original, PruneResult, load_original, run_prune
from netsize.runs.study import StudyResult, grow_trials, prune_trials, run_study

__all__ = ["CompareResult", "GrowResult", "Original", "PruneResult", "StudyResult",
           "compare_recipe", "compare_runs", "grow_trials", "load_original", "prune_trials",
           "run_grow", "run_prune", "run_study"]
