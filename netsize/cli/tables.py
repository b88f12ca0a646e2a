"""Rich tables of results for the commands, sized for an 80-column terminal."""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.table import Table

from netsize.compare import MethodSummary
from netsize.measure import NOISY
from netsize.report import Point


def front_table(front: list[Point], caption: str, title: str) -> Table:
    table = Table(title=title, caption=caption)
    trial = bool(front) and "trial" in front[0]
    headers = (["trial"] if trial else []) + ["checkpoint", "step", "parameters", "validation",
                                              "test"]
    for header in headers:
        table.add_column(header, justify="left" if header == "checkpoint" else "right")
    for r in front:
        cells = [str(r["trial"])] if trial else []
        cells += [r["tag"], str(r.get("step", "")), f"{r['params']:,}",
                  f"{r['val_metric']:.4f}", f"{r['test_metric']:.4f}"]
        table.add_row(*cells)
    return table


def _sci(x: float) -> str:
    """1950000.0 -> '1.95e6': three digits, short enough for an 80-column table."""
    return f"{x:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _table(title: str, caption: str, headers: list[str]) -> Table:
    """A table that fits 80 columns: no vertical rules, numbers right-aligned, never cut."""
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _latency_cell(row: Point, key: str) -> str:
    """'-' when latency was left out; a trailing '?' when its repeats spread over NOISY."""
    value = row.get(key)
    if not isinstance(value, float):
        return "-"
    return f"{value:.3f}" + ("?" if (row.get("latency_spread") or 1.0) > NOISY else "")


def prune_table(rows: list[Point], run_dir: Path) -> Table:
    noisy = any((r.get("latency_spread") or 1.0) > NOISY for r in rows)
    caption = (f"?: latency repeats spread over {NOISY:g}x (noisy); " if noisy else "") + \
        f"outputs in {run_dir}"
    table = _table("original / pruned+transfer / from-scratch", caption,
                   ["variant", "eps", "params", "FLOPs", "ms b1", "ms b64", "val", "test"])
    for r in rows:
        table.add_row(r["variant"], str(r["epsilon"]), f"{r['params']:,}", _sci(r["flops"]),
                      _latency_cell(r, "latency_b1_ms"), _latency_cell(r, "latency_b64_ms"),
                      f"{r['val_metric']:.4f}", f"{r['test_metric']:.4f}")
    return table


def _number(x: float, form: str) -> str:
    """'-' for NaN (not recorded, or not comparable), else x in `form`."""
    return "-" if math.isnan(x) else format(x, form)


def compare_tables(summaries: list[MethodSummary], folder: Path) -> list[Table]:
    """Two tables that each fit 80 columns: the methods' fronts (hypervolume, anytime metric,
    best checkpoint), then their compute and the fewest parameters reaching each target."""
    fronts = _table("netsize compare: fronts", "", ["method", "points", "hypervolume",
                                                    "anytime", "best", "params at best"])
    for s in summaries:
        fronts.add_row(s.method, str(s.points), f"{s.hypervolume:.4f} ± {s.hypervolume_std:.4f}",
                       _number(s.anytime, ".4f"), f"{s.best_metric:.4f}", f"{s.params_at_best:,}")
    targets = list(summaries[0].reach)
    compute = _table("compute, and parameters to reach a metric", f"outputs in {folder}",
                     ["method", "train FLOPs", "wall s", *(f">= {t}" for t in targets)])
    for s in summaries:
        compute.add_row(s.method, _sci(s.train_flops), _number(s.wall_seconds, ".1f"),
                        *(f"{s.reach[t]:,}" if s.reach[t] is not None else "-" for t in targets))
    return [fronts, compute]
