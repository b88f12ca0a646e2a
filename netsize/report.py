"""Pareto fronts, plots and Markdown reports. No torch here: rows of plain numbers in, files out."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from netsize.files import write_csv, write_json

# The two objectives of every front in netsize, defined once.
OBJECTIVES = {"val_metric": "maximize", "params": "minimize"}


class Point(TypedDict, total=False):
    """One checkpoint on the size/metric plane: a row of every front, CSV and JSON netsize writes.

    params and val_metric are always present; the rest depends on who made the point.
    """

    tag: str  # checkpoint name: "event-003", "best", "final", "eps-0.5", ...
    params: int
    val_metric: float  # accuracy, or R^2 for regression
    test_metric: float
    flops: int  # forward FLOPs per example
    step: int
    epoch: int
    path: str  # checkpoint folder
    method: str  # compare: fixed, grow-senn, prune, ...
    seed: int
    trial: int  # studies
    variant: str  # prune: original, pruned+transfer, from-scratch
    epsilon: float | str
    latency_b1_ms: float | None  # prune: CPU ms per forward pass (None: --no-latency)
    latency_b64_ms: float | None
    latency_spread: float | None  # max / min of the latency rounds


def task_metric(task: str) -> str:
    """The name of the metric of a task: accuracy (classification) or R^2 (regression)."""
    return "accuracy" if task == "classification" else "R^2"


def pareto_front(rows: Sequence[Any], metric: str = "val_metric",
                 size: str = "params") -> list[Any]:
    """Rows not dominated by any other (higher metric is better, smaller size is better).

    A row is dominated when another is at least as good on both and better on one. Exact
    duplicates are all kept once (the first). Returned sorted by size.
    """
    ordered = sorted(rows, key=lambda r: (r[size], -r[metric]))
    front: list[Any] = []
    best = float("-inf")
    for row in ordered:
        if row[metric] > best:
            front.append(row)
            best = row[metric]
    return front


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick positions for a log axis over [lo, hi] that a reader can read: 1-2-5 per decade,
    1..9 per decade when that gives too few, the ends themselves for a very narrow span."""
    decades = range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**d for d in decades for m in mantissas if lo <= m * 10.0**d <= hi]
        if len(ticks) >= 3:
            return ticks
    return sorted({lo, hi})


def human_count(x: float, _pos: Any = None) -> str:
    """1200 -> '1.2k', 25_557_032 -> '25.6M': parameter counts as tick labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.3g}"


def point_label(p: Point) -> str:
    """What a dot on the plot is: its checkpoint tag, or its prune variant and epsilon."""
    if p.get("tag"):
        return str(p["tag"])
    if p.get("variant") in ("pruned+transfer", "from-scratch"):
        return f"eps {p.get('epsilon')}"
    return str(p.get("variant", ""))


def draw_fronts(ax: Any, groups: dict[str, list[Point]], title: str, metric_name: str) -> None:
    """Every point as a dot and each group's Pareto front as a step line in its own colour,
    parameters on log10 with readable ticks, front points labelled with their checkpoint, the
    y axis named after the metric."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    single = len(groups) == 1
    for i, (label, points) in enumerate(sorted(groups.items())):
        colour = "#d9480f" if single else f"C{i}"
        ax.scatter([p["params"] for p in points], [p["val_metric"] for p in points], s=16,
                   color="#9aa5b1" if single else colour, alpha=1.0 if single else 0.35,
                   label="checkpoints" if single else None)
        front = pareto_front(points)
        ax.step([p["params"] for p in front], [p["val_metric"] for p in front], where="post",
                color=colour, marker="o", label="Pareto front" if single else label)
        for p in front:
            ax.annotate(point_label(p), (p["params"], p["val_metric"]), fontsize=7,
                        color=colour, xytext=(4, -9), textcoords="offset points")
    sizes = [p["params"] for points in groups.values() for p in points]
    lo, hi = min(sizes) / 1.25, max(sizes) * 1.25  # room for the end labels
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    ax.xaxis.set_major_formatter(FuncFormatter(human_count))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel(f"validation {metric_name}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def plot_fronts(path: Path, groups: dict[str, list[Point]], title: str, metric_name: str) -> None:
    """draw_fronts into a PNG at `path` (written whole, then renamed into place)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    draw_fronts(ax, groups, title, metric_name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def read_front(folder: Path) -> list[dict[str, Any]]:
    """The points of the front that write_front wrote into `folder` (ValueError, KeyError or
    OSError when there is none)."""
    return list(read_front_record(folder)["points"])


def read_front_metric(folder: Path) -> str | None:
    """The metric name (accuracy, R^2) of the front in `folder`, None when there is none."""
    try:
        metric = read_front_record(folder).get("metric")
    except (OSError, ValueError):
        return None
    return metric if isinstance(metric, str) else None


def read_front_record(folder: Path) -> dict[str, Any]:
    """The whole front.json that write_front wrote: metric, objectives, points."""
    return dict(json.loads((folder / "front.json").read_text()))


def write_front(folder: Path, points: list[Point], columns: list[str], title: str,
                metric_name: str, group_by: str | None = None,
                about: dict[str, Any] | None = None,
                also_plot: Sequence[Point] = ()) -> list[Point]:
    """front.csv, front.json and front.png of `points` in `folder`; returns the front.

    The one writer of fronts: grow, train, prune, studies and compare all call it. group_by
    (e.g. "method", "variant") draws one front per group in the plot; the files hold the
    overall front of `points`. also_plot: points drawn in their groups but not on the front
    (prune's from-scratch controls).
    """
    front = pareto_front(points)
    write_csv(folder / "front.csv", front, columns)
    write_json(folder / "front.json", {**(about or {}), "metric": metric_name,
                                       "objectives": OBJECTIVES, "points": front})
    if points:
        groups: dict[str, list[Point]] = {}
        for p in [*points, *also_plot]:
            groups.setdefault(str(p.get(group_by, "")) if group_by else "", []).append(p)
        plot_fronts(folder / "front.png", groups, title, metric_name)
    return front


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: list[tuple[str, str]]) -> str:
    """columns: (key, header) pairs; floats are shown with 4 decimals."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(cell(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


CHECKPOINT_COLUMNS = [("tag", "checkpoint"), ("step", "step"), ("params", "parameters"),
                      ("flops", "FLOPs/example"), ("val_metric", "validation"),
                      ("test_metric", "test")]
EVENT_COLUMNS = [("step", "step"), ("epoch", "epoch"), ("kind", "kind"), ("layer", "layer"),
                 ("units", "units"), ("init", "init"), ("params_after", "parameters after"),
                 ("ratio", "eta ratio"), ("architecture", "architecture")]


Rows = Sequence[Mapping[str, Any]]


def grow_report(name: str, summary: dict[str, Any], events: Rows, checkpoints: Rows,
                front: Rows) -> str:
    lines = [
        f"# netsize grow: {name}",
        "",
        f"- task: {summary['task']} (metric: {summary['metric']})",
        f"- start: {summary['start_architecture']} ({summary['start_params']:,} parameters)",
        f"- end: {summary['final_architecture']} ({summary['final_params']:,} parameters)",
        f"- best validation {summary['metric']}: {summary['best_val']:.4f} "
        f"(test {summary['best_test']:.4f})",
        f"- why the size stopped: {summary.get('growth_stopped', '')}",
        *([f"- growth cadence: {summary['cadence']}"] if summary.get("cadence") else []),
        f"- growth events: {len(events)}; wall time {summary['wall_seconds']:.1f} s, of which "
        f"scoring and surgery {summary['growth_seconds']:.2f} s "
        f"({100 * summary['growth_share']:.1f}%)",
        "",
        "## Pareto front (validation metric against parameters, over every checkpoint)",
        "",
        markdown_table(front, CHECKPOINT_COLUMNS),
        "",
        "![front](front.png)",
        "",
        "## Growth events",
        "",
        markdown_table(events, EVENT_COLUMNS) if events else "No growth event.",
        "",
        "## Checkpoints",
        "",
        markdown_table(checkpoints, CHECKPOINT_COLUMNS),
        "",
    ]
    return "\n".join(lines)
