"""Whether run folders can share one front: the same data (else refused), the same training
(else a loud warning), read from the recipe.yaml every run writes beside its results; and the
metric they share, for the plot's axis.

Methods differ by design in model, grow, prune and seed, so those sections are not compared;
a fixed sweep's method folder holds one run per width, each with its own recipe.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from netsize.errors import UserError
from netsize.report import read_front_metric

# The keys that define the evaluation data: runs differing here have incomparable metrics.
# (data.augment changes training only, so it is checked with the train section.)
_TRAINING = ("train", "data.augment")
_MAX_NAMED = 3  # differing keys named in one warning


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}"))
    return out


def _recipes(folder: Path) -> list[dict[str, Any]]:
    """The recipe of a run folder, or of each run inside a method folder."""
    files = [folder / "recipe.yaml"] if (folder / "recipe.yaml").is_file() else \
        sorted(folder.glob("*/recipe.yaml"))
    return [tree for tree in (yaml.safe_load(f.read_text()) for f in files)
            if isinstance(tree, dict)]


def _sections(recipe: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data keys, training keys) of one recipe, flattened to dotted keys."""
    flat = {**_flat(recipe.get("data", {}), "data"), **_flat(recipe.get("train", {}), "train")}
    training = {k: v for k, v in flat.items() if k.startswith(_TRAINING)}
    data = {k: v for k, v in flat.items() if k.startswith("data.") and k not in training}
    return data, training


def _differences(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    keys = sorted(set(first) | set(other))
    return [k for k in keys if first.get(k) != other.get(k)]


def check_comparable(run_dirs: Sequence[str | Path]) -> list[str]:
    """Raise UserError when the runs were trained on different data; return one warning line
    per run whose training settings differ from the first run's."""
    runs = [(Path(d), tree) for d in run_dirs for tree in _recipes(Path(d))]
    if len(runs) < 2:
        return []
    (first_dir, first), warnings, warned = runs[0], list[str](), {runs[0][0]}
    first_data, first_training = _sections(first)
    for folder, tree in runs[1:]:
        data, training = _sections(tree)
        if keys := _differences(first_data, data):
            key = keys[0]
            raise UserError(f"{folder} and {first_dir} were trained on different data ({key}: "
                            f"{first_data.get(key)!r} vs {data.get(key)!r}), so their metrics "
                            "do not compare; pass runs of one data set.")
        keys = _differences(first_training, training)
        if keys and folder not in warned:  # one line per folder (a sweep has several runs)
            warned.add(folder)
            named = ", ".join(f"{k} {first_training.get(k)!r} vs {training.get(k)!r}"
                              for k in keys[:_MAX_NAMED])
            more = f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else ""
            warnings.append(f"{folder} was trained differently from {first_dir} ({named}{more}):"
                            " the fronts are compared as they are, but training, not the method,"
                            " may explain the ranking.")
    return warnings


def metric_name(run_dirs: Sequence[str | Path]) -> str:
    """The metric the runs report (accuracy, R^2), from the front every run writes."""
    for d in run_dirs:
        for folder in [Path(d), *sorted(p.parent for p in Path(d).glob("*/recipe.yaml"))]:
            if metric := read_front_metric(folder):
                return metric
    return "metric"
