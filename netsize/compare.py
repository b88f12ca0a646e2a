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

    # five sizes from the recipe's own up: they span the sizes a grown run passes through
    # (compare reports whether they do)
    width_factors: list[Annotated[float, Field(gt=0.0, le=1e3)]] = Field(
        [1.0, 1.5, 2.0, 3.0, 4.0], min_length=1, max_length=100)
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


Curve = Sequence[tuple[float, float]]  # (training FLOPs so far, validation metric), in order


def anytime_metric(curve: Curve) -> float:
    """Area under the best validation metric reached so far against training FLOPs, divided
    by the total FLOPs: the mean over the compute spent of the metric of the best model one
    would hold on stopping there. Each stretch of compute between two evaluations counts at
    the best metric reached by its end. NaN without a curve."""
    total, area, best, spent = 0.0, 0.0, -math.inf, 0.0
    for flops, metric in curve:
        best = max(best, metric)
        area += (flops - spent) * best
        total, spent = flops, flops
    return area / total if total > 0 else math.nan


def join_curves(curves: Sequence[Curve]) -> list[tuple[float, float]]:
    """Runs made one after another (a fixed sweep) as one curve: each run's FLOPs start where
    the previous run's ended."""
    out, offset = [], 0.0
    for curve in curves:
        out += [(offset + flops, metric) for flops, metric in curve]
        offset = out[-1][0] if out else offset
    return out


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
    anytime: float = math.nan  # anytime_metric, mean over seeds (NaN: no curve recorded)
    anytime_std: float = math.nan


def summarise(rows: Sequence[Mapping[str, Any]], compute: dict[str, dict[str, float]],
              targets: list[float], curves: Mapping[tuple[str, int], Curve] | None = None,
              ) -> tuple[list[MethodSummary], tuple[float, float]]:
    """Per method: hypervolume (mean and spread over seeds, one shared reference point), best
    metric, parameters to reach each target, compute, anytime metric. compute[method] =
    {flops, seconds} per seed averaged by the caller; curves[(method, seed)] the training
    curve of that method and seed (see anytime_metric)."""
    ref = reference_point(rows)
    out = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        seeds = sorted({r["seed"] for r in mine})
        volumes = [hypervolume([r for r in mine if r["seed"] == s], ref) for s in seeds]
        best = max(mine, key=lambda r: (r["val_metric"], -r["params"]))
        anytime = [anytime_metric((curves or {}).get((method, s), ())) for s in seeds]
        out.append(MethodSummary(
            method, len(mine), statistics.fmean(volumes), _spread(volumes),
            best["val_metric"], int(best["params"]),
            {f"{t:g}": params_to_reach(mine, t) for t in targets},
            compute.get(method, {}).get("flops", float("nan")),
            compute.get(method, {}).get("seconds", float("nan")),
            statistics.fmean(anytime), _spread(anytime)))
    return out, ref


def _spread(values: list[float]) -> float:
    """Population standard deviation over seeds (0 for one seed, NaN where one is NaN)."""
    if not all(math.isfinite(v) for v in values):
        return math.nan
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def sweep_coverage(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Whether the fixed sweep's sizes span each grown method's, from its start size to beyond
    its final size (largest checkpoint), per seed: one sentence per grown method."""
    fixed = sorted({int(r["params"]) for r in rows if r["method"] == "fixed"})
    if not fixed:
        return []
    lines = []
    for method in sorted({r["method"] for r in rows if r["method"].startswith("grow")}):
        mine = [r for r in rows if r["method"] == method]
        seeds = {r["seed"] for r in mine}
        start = min(min(r["params"] for r in mine if r["seed"] == s) for s in seeds)
        end = max(max(r["params"] for r in mine if r["seed"] == s) for s in seeds)
        inside = [p for p in fixed if start <= p]
        covered = fixed[0] <= start and fixed[-1] > end
        lines.append(
            f"- fixed sweep: {len(fixed)} sizes, {fixed[0]:,}-{fixed[-1]:,} parameters; "
            f"{method} runs from {start:,} to {end:,}: "
            + ("covered." if covered and len(inside) >= 4 else
               "not covered; add compare.width_factors so that at least 4 sizes run from the "
               "start size to beyond the grown size."))
    return lines


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
