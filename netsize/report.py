"""Pareto fronts, plots and Markdown reports. No torch here: rows of plain numbers in, files out."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pareto_front(rows: list[dict[str, Any]], metric: str = "val_metric",
                 size: str = "params") -> list[dict[str, Any]]:
    """Rows not dominated by any other (higher metric is better, smaller size is better).

    A row is dominated when another is at least as good on both and better on one. Exact
    duplicates are all kept once (the first). Returned sorted by size.
    """
    ordered = sorted(rows, key=lambda r: (r[size], -r[metric]))
    front: list[dict[str, Any]] = []
    best = float("-inf")
    for row in ordered:
        if row[metric] > best:
            front.append(row)
            best = row[metric]
    return front


def plot_front(path: Path, rows: list[dict[str, Any]], front: list[dict[str, Any]],
               title: str, metric_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.scatter([r["params"] for r in rows], [r["val_metric"] for r in rows], s=18,
               color="#9aa5b1", label="checkpoints")
    ax.step([r["params"] for r in front], [r["val_metric"] for r in front], where="post",
            color="#d9480f", marker="o", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"validation {metric_name}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
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


def grow_report(name: str, summary: dict[str, Any], events: list[dict[str, Any]],
                checkpoints: list[dict[str, Any]], front: list[dict[str, Any]]) -> str:
    lines = [
        f"# netsize grow: {name}",
        "",
        f"- task: {summary['task']} (metric: {summary['metric']})",
        f"- start: {summary['start_architecture']} ({summary['start_params']:,} parameters)",
        f"- end: {summary['final_architecture']} ({summary['final_params']:,} parameters)",
        f"- best validation {summary['metric']}: {summary['best_val']:.4f} "
        f"(test {summary['best_test']:.4f})",
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
