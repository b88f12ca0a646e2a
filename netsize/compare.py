"""Comparing methods on one budget: fronts, hypervolume, parameters to reach a target, gates.

Pure functions over rows of plain numbers (no torch), and the compare section of a recipe.
Each row is one checkpoint with at least
`method`, `seed`, `params` and `val_metric`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from netsize.config import Strict
from netsize.errors import UserError
from netsize.report import pareto_front


class CompareConfig(Strict):
    """netsize compare: the fixed sweep, the schedule of the schedule-grown methods, targets."""

    width_factors: list[Annotated[float, Field(gt=0.0, le=1e3)]] = Field(
        [1.0, 2.0, 4.0], min_length=1, max_length=100)
    schedule_times: int = Field(4, ge=1, le=1000)  # grow-gradmax / grow-random: growth steps
    schedule_amount: float = Field(0.5, gt=0.0, le=64.0)  # each adds this x the start widths
    # report the parameters needed to first reach these metrics
    targets: list[float] = Field([0.7, 0.8], max_length=100)


def reference_point(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """(params, metric) that every point dominates: 2x the largest size, the lowest metric
    (0 for a metric that never goes below 0, such as accuracy)."""
    params = 2.0 * max(r["params"] for r in rows)
    metric = min(0.0, min(r["val_metric"] for r in rows))
    return params, metric


def hypervolume(rows: Sequence[Mapping[str, Any]], ref: tuple[float, float]) -> float:
    """Area dominated by the rows' front inside the reference box, with parameters on a log10
    axis (a 10x smaller model counts the same at every scale). Higher is better.

    The front is sorted by size with rising metric, so between a front point and the next
    larger one the best metric on offer is that point's: the area is a staircase.
    """
    ref_x, ref_y = math.log10(ref[0]), ref[1]
    front = [r for r in pareto_front(rows) if r["params"] < ref[0] and r["val_metric"] > ref_y]
    xs = [math.log10(max(r["params"], 1e-12)) for r in front]
    area = 0.0
    for i, row in enumerate(front):
        x_right = xs[i + 1] if i + 1 < len(front) else ref_x
        area += (x_right - xs[i]) * (row["val_metric"] - ref_y)
    return area


def params_to_reach(rows: Sequence[Mapping[str, Any]], target: float) -> int | None:
    """Fewest parameters of a checkpoint whose validation metric reaches `target`."""
    sizes = [r["params"] for r in rows if r["val_metric"] >= target]
    return int(min(sizes)) if sizes else None


@dataclass
class MethodSummary:
    method: str
    points: int
    hypervolume: float  # mean over seeds
    hypervolume_std: float
    best_metric: float
    params_at_best: int
    reach: dict[str, int | None]  # target -> fewest parameters reaching it (all seeds pooled)
    train_flops: float  # mean per seed
    wall_seconds: float  # mean per seed


def summarise(rows: Sequence[Mapping[str, Any]], compute: dict[str, dict[str, float]],
              targets: list[float]) -> tuple[list[MethodSummary], tuple[float, float]]:
    """Per method: hypervolume (mean and spread over seeds, one shared reference point), best
    metric, parameters to reach each target, compute. compute[method] = {flops, seconds} per seed
    averaged by the caller."""
    ref = reference_point(rows)
    out = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        seeds = sorted({r["seed"] for r in mine})
        volumes = [hypervolume([r for r in mine if r["seed"] == s], ref) for s in seeds]
        best = max(mine, key=lambda r: (r["val_metric"], -r["params"]))
        out.append(MethodSummary(
            method, len(mine), statistics.fmean(volumes),
            statistics.pstdev(volumes) if len(volumes) > 1 else 0.0,
            best["val_metric"], int(best["params"]),
            {f"{t:g}": params_to_reach(mine, t) for t in targets},
            compute.get(method, {}).get("flops", float("nan")),
            compute.get(method, {}).get("seconds", float("nan"))))
    return out, ref


def mark_front(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with `on_front` (the front over every method) and `on_method_front` set."""
    overall = {id(r) for r in pareto_front(rows)}
    marked = []
    for method in {r["method"] for r in rows}:
        mine = [r for r in rows if r["method"] == method]
        own = {id(r) for r in pareto_front(mine)}
        marked += [dict(r, on_front=id(r) in overall, on_method_front=id(r) in own) for r in mine]
    return sorted(marked, key=lambda r: (r["method"], r["seed"], r["params"]))


# -------------------------------------------------------------------------------------- gates
_REQUIRE = re.compile(r"^\s*([\w.-]+)\s*(>=|>|<=|<)\s*([\w.-]+)\s*$")


def check_requirement(text: str, summaries: list[MethodSummary]) -> tuple[bool, str]:
    """'grow-gradmax >= fixed': compares the two methods' mean hypervolumes."""
    match = _REQUIRE.match(text)
    if not match:
        raise UserError(f"--require {text!r}: write it as 'METHOD >= METHOD' (>=, >, <=, <), "
                        "e.g. 'grow-gradmax >= fixed'.")
    left, op, right = match.groups()
    volumes = {s.method: s.hypervolume for s in summaries}
    for name in (left, right):
        if name not in volumes:
            raise UserError(f"--require {text!r}: no method {name!r}; compared: "
                            f"{', '.join(sorted(volumes))}.")
    a, b = volumes[left], volumes[right]
    holds = {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b}[op]
    return holds, f"{left} hypervolume {a:.4f} {op} {right} {b:.4f}"


def check_target(rows: Sequence[Mapping[str, Any]], min_metric: float | None,
                 max_params: int | None) -> tuple[bool, str]:
    """Some checkpoint has metric >= min_metric with params <= max_params."""
    ok = [r for r in rows if (min_metric is None or r["val_metric"] >= min_metric)
          and (max_params is None or r["params"] <= max_params)]
    want = " and ".join(x for x in (
        f"validation metric >= {min_metric:g}" if min_metric is not None else "",
        f"parameters <= {max_params:,}" if max_params is not None else "") if x)
    if ok:
        best = min(ok, key=lambda r: r["params"])
        return True, (f"{want}: met by {best['method']} ({best['params']:,} parameters, "
                      f"{best['val_metric']:.4f})")
    return False, f"no checkpoint has {want}"
