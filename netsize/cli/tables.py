"""Rich tables of results for the commands, sized for an 80-column terminal."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table

from netsize.compare import MethodSummary
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


def prune_table(rows: list[Point], run_dir: Path) -> Table:
    table = _table("original / pruned+transfer / from-scratch", f"outputs in {run_dir}",
                   ["variant", "eps", "params", "FLOPs", "ms b1", "ms b64", "val", "test"])
    for r in rows:
        table.add_row(r["variant"], str(r["epsilon"]), f"{r['params']:,}", _sci(r["flops"]),
                      f"{r['latency_b1_ms']:.3f}", f"{r['latency_b64_ms']:.3f}",  # type: ignore
                      f"{r['val_metric']:.4f}", f"{r['test_metric']:.4f}")
    return table


def compare_tables(summaries: list[MethodSummary], folder: Path) -> list[Table]:
    """The methods' fronts and compute; and, when the recipe names target metrics, the fewest
    parameters reaching each (a second table, so both fit 80 columns)."""
    main = _table("netsize compare", "" if summaries[0].reach else f"outputs in {folder}",
                  ["method", "points", "hypervolume", "best", "params", "FLOPs", "wall s"])
    for s in summaries:
        main.add_row(s.method, str(s.points), f"{s.hypervolume:.4f} ± {s.hypervolume_std:.4f}",
                     f"{s.best_metric:.4f}", f"{s.params_at_best:,}", _sci(s.train_flops),
                     f"{s.wall_seconds:.1f}")
    if not summaries[0].reach:
        return [main]
    targets = list(summaries[0].reach)
    reach = _table("parameters to reach", f"outputs in {folder}",
                   ["method", *(f">= {t}" for t in targets)])
    for s in summaries:
        reach.add_row(s.method, *(f"{s.reach[t]:,}" if s.reach[t] is not None else "-"
                                  for t in targets))
    return [main, reach]
