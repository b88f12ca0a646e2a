"""The search space: dotted recipe keys sampled by an Optuna trial, turned into overrides."""

from __future__ import annotations

from typing import Any

import optuna

from netsize.recipe import Recipe, derive
from netsize.search.config import ParamSpace


def suggest(trial: optuna.Trial, space: dict[str, ParamSpace]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, param in sorted(space.items()):
        if param.type == "categorical":
            assert param.choices is not None
            values[key] = trial.suggest_categorical(key, param.choices)
        elif param.type == "int":
            assert param.low is not None and param.high is not None
            values[key] = trial.suggest_int(key, int(param.low), int(param.high), log=param.log)
        else:
            assert param.low is not None and param.high is not None
            values[key] = trial.suggest_float(key, param.low, param.high, log=param.log)
    return values


def apply(base: Recipe, values: dict[str, Any], origin: str) -> Recipe:
    """The base recipe with the sampled values, validated like any recipe."""
    return derive(base, values, origin)


def check_space(base: Recipe, origin: str) -> None:
    """Fail early (exit 2) on a space key that is no recipe key, before any trial runs."""
    probe: dict[str, Any] = {}
    for key, param in base.search.space.items():
        if param.type == "categorical":
            assert param.choices is not None
            probe[key] = param.choices[0]
        else:
            assert param.low is not None
            probe[key] = int(param.low) if param.type == "int" else param.low
    apply(base, probe, f"{origin}: search.space")
