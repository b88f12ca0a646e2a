"""Optuna studies over netsize runs. The only package that imports optuna."""

from netsize.search.space import check_space
from netsize.search.storage import default_url, has_heartbeat, make_storage
from netsize.search.study import (
    TrialResult,
    all_points,
    objective_names,
    open_study,
    run_worker,
    trial_rows,
)

__all__ = ["TrialResult", "all_points", "check_space", "default_url", "has_heartbeat",
           "make_storage", "objective_names", "open_study", "run_worker", "trial_rows"]
