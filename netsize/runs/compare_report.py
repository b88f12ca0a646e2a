"""compare's summary rows, claims and report.md (plain rows in, text out)."""

from __future__ import annotations

import math
from typing import Any

from netsize.compare import MethodSummary
from netsize.report import markdown_table


def summary_rows(summaries: list[MethodSummary]) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        row = {"method": s.method, "points": s.points,
               "hypervolume": f"{s.hypervolume:.4f} ± {s.hypervolume_std:.4f}",
               # mean validation metric over the compute spent (netsize.compare.anytime_metric)
               "anytime": "-" if math.isnan(s.anytime) else f"{s.anytime:.4f}",
               "best": f"{s.best_metric:.4f}", "params_at_best": s.params_at_best,
               "train_flops": f"{s.train_flops:.3g}",
               "wall_s": "-" if math.isnan(s.wall_seconds) else f"{s.wall_seconds:.1f}"}
        row.update({f"params@{t}": (v if v is not None else "-") for t, v in s.reach.items()})
        rows.append(row)
    return rows


def claims(summaries: list[MethodSummary]) -> list[str]:
    """Each grow method's hypervolume and compute against the fixed sweep's, as measured."""
    by = {s.method: s for s in summaries}
    fixed = by.get("fixed")
    if fixed is None:
        return []
    lines = []
    for s in summaries:
        if s.method.startswith("grow"):
            lines.append(f"- {s.method}: hypervolume {s.hypervolume:.4f} against the fixed "
                         f"sweep's {fixed.hypervolume:.4f} ({s.hypervolume / fixed.hypervolume:.1%}"
                         f"), using {s.train_flops / fixed.train_flops:.1%} of its training FLOPs"
                         f" ({s.train_flops:.3g} vs {fixed.train_flops:.3g}).")
    return lines


def report(summaries: list[MethodSummary], ref: tuple[float, float],
           gates: list[tuple[bool, str]], claim_lines: list[str] | None = None) -> str:
    """report.md; claim_lines: the growth-against-sweep lines (default: claims(summaries))."""
    table = summary_rows(summaries)
    columns = [(k, k) for k in table[0]] if table else []
    lines = ["# netsize compare", "",
             f"Hypervolume: area dominated by each method's front with parameters on a log10 "
             f"axis, against one reference point ({ref[0]:,.0f} parameters, metric {ref[1]:g});"
             " mean ± standard deviation over seeds. Anytime: the best validation metric reached "
             "so far, averaged over the training FLOPs spent (runs of a sweep one after another,"
             " smallest first; prune: its original's training, then each fine-tuning), mean "
             "over seeds. Compute: training FLOPs (3 x forward, per seed, the prune method "
             "including its original's training) and wall time (shown "
             "only when every run was timed on one host, device and thread count).", "",
             markdown_table(table, columns), "", "## Growth against the fixed sweep", "",
             *((claims(summaries) if claim_lines is None else claim_lines)
               or ["(no fixed sweep in this comparison)"]), "",
             "![fronts](front.png)", ""]
    if gates:
        lines += ["## Gates", "", *[f"- {'pass' if ok else 'FAIL'}: {text}" for ok, text in gates],
                  ""]
    return "\n".join(lines)
