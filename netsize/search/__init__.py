"""Optuna studies over netsize runs. The only package that imports optuna.

`netsize.search.config` (the recipe's search section) is light; the rest is imported on first
use, so loading a recipe never loads optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "check_space": "space", "default_url": "storage", "has_heartbeat": "storage",
    "make_storage": "storage", "TrialResult": "study", "all_points": "study",
    "objective_names": "study", "open_study": "study", "run_worker": "study",
    "trial_rows": "study",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'netsize.search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"netsize.search.{_EXPORTS[name]}"), name)
