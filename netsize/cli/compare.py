"""`netsize compare`: grow, prune and fixed sizes side by side, with reports and CI gates."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netsize.cli.common import (
    DeviceOption,
    SetOption,
    ThreadsOption,
    new_run_dir,
    resolve_device,
    set_threads,
    user_errors_exit_2,
)
from netsize.cli.compare_runs import METHODS, read_folder, run_all
from netsize.compare import (
    MethodSummary,
    check_requirement,
    check_target,
    mark_front,
    summarise,
)
from netsize.errors import UserError
from netsize.io import write_csv, write_json
from netsize.recipe import load_recipe
from netsize.report import markdown_table, pareto_front

POINT_COLUMNS = ["method", "seed", "tag", "params", "val_metric", "test_metric", "on_front",
                 "on_method_front", "path"]


def _compute(parts: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean training FLOPs and wall seconds per method over its seeds."""
    out: dict[str, dict[str, float]] = {}
    for method in {p["method"] for p in parts}:
        mine = [p for p in parts if p["method"] == method]
        out[method] = {"flops": statistics.fmean(p["train_flops"] for p in mine),
                       "seconds": statistics.fmean(p["wall_seconds"] for p in mine)}
    return out


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        mine = [r for r in rows if r["method"] == method]
        colour = f"C{i}"
        ax.scatter([r["params"] for r in mine], [r["val_metric"] for r in mine], s=14,
                   color=colour, alpha=0.35)
        front = pareto_front(mine)
        ax.step([r["params"] for r in front], [r["val_metric"] for r in front], where="post",
                color=colour, marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation metric")
    ax.set_title("netsize compare: Pareto fronts (all seeds pooled; dots: every checkpoint)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _summary_rows(summaries: list[MethodSummary]) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        row = {"method": s.method, "points": s.points,
               "hypervolume": f"{s.hypervolume:.4f} ± {s.hypervolume_std:.4f}",
               "best": f"{s.best_metric:.4f}", "params_at_best": s.params_at_best,
               "train_flops": f"{s.train_flops:.3g}", "wall_s": f"{s.wall_seconds:.1f}"}
        row.update({f"params@{t}": (v if v is not None else "-") for t, v in s.reach.items()})
        rows.append(row)
    return rows


def _claims(summaries: list[MethodSummary]) -> list[str]:
    """Each grow method's hypervolume and compute against the fixed sweep's, as measured."""
    by = {s.method: s for s in summaries}
    fixed = by.get("fixed")
    if fixed is None:
        return []
    lines = []
    for s in summaries:
        if s.method.startswith("grow"):
            lines.append(f"- {s.method}: hypervolume {s.hypervolume:.4f} against the fixed "
                         f"sweep's {fixed.hypervolume:.4f} ({s.hypervolume / fixed.hypervolume:.0%}"
                         f"), using {s.train_flops / fixed.train_flops:.0%} of its training FLOPs"
                         f" ({s.train_flops:.3g} vs {fixed.train_flops:.3g}).")
    return lines


def _report(rows: list[dict[str, Any]], summaries: list[MethodSummary], ref: tuple[float, float],
            gates: list[tuple[bool, str]]) -> str:
    table = _summary_rows(summaries)
    columns = [(k, k) for k in table[0]] if table else []
    lines = ["# netsize compare", "",
             f"Hypervolume: area dominated by each method's front with parameters on a log10 "
             f"axis, against one reference point ({ref[0]:,.0f} parameters, metric {ref[1]:g});"
             " mean ± standard deviation over seeds. Compute: training FLOPs (3 x forward, per "
             "seed, the prune method including its original's training) and wall time.", "",
             markdown_table(table, columns), "", "## Growth against the fixed sweep", "",
             *(_claims(summaries) or ["(no fixed sweep in this comparison)"]), "",
             "![fronts](front.png)", ""]
    if gates:
        lines += ["## Gates", "", *[f"- {'pass' if ok else 'FAIL'}: {text}" for ok, text in gates],
                  ""]
    return "\n".join(lines)


@user_errors_exit_2
def compare(
    targets: Annotated[list[Path], typer.Argument(
        help="A recipe to run every method on, or run folders to compare as they are.")],
    methods: Annotated[str, typer.Option(help="Comma-separated methods to run.")] =
        ",".join(METHODS),
    seeds: Annotated[int, typer.Option(help="Seeds per method (recipe seed, +1, ...).")] = 1,
    budget: Annotated[float | None, typer.Option(
        help="Cap on each training run's FLOPs (3 x forward FLOPs x examples).")] = None,
    require: Annotated[list[str] | None, typer.Option(
        help="Gate on hypervolumes, e.g. --require 'grow-gradmax >= fixed' (repeatable).")] =
        None,
    min_metric: Annotated[float | None, typer.Option(
        help="Gate: some checkpoint reaches this validation metric ...")] = None,
    max_params: Annotated[int | None, typer.Option(
        help="... with at most this many parameters.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] =
        False,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder (default: results/compare/<name>/<timestamp>-s<seed>).")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Grow, prune and fixed sizes on the same data and seeds; fronts, hypervolumes, gates.

    Exit code 0 when every gate holds, 1 when one fails, 2 on bad input.

    Example:  netsize compare recipes/digits.yaml --require 'grow-senn >= fixed'
    Example:  netsize compare results/grow/digits/RUN results/train/digits/RUN --min-metric 0.95
    """
    console = Console(stderr=json_out)
    set_threads(threads)
    if len(targets) == 1 and targets[0].is_file():
        recipe = load_recipe(targets[0], list(set_ or []))
        chosen = [m.strip() for m in methods.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in METHODS]
        if unknown or not chosen or seeds < 1:
            raise UserError(f"--methods {methods!r} / --seeds {seeds}: choose methods from "
                            f"{', '.join(METHODS)} and 1 or more seeds.")
        folder = out or new_run_dir(Path("results") / "compare" / targets[0].stem, recipe.seed)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            run_dirs = run_all(recipe, chosen, seeds, folder, resolve_device(device), budget,
                               progress)
        name, goals = targets[0].stem, list(recipe.compare.targets)
    else:
        missing = [str(t) for t in targets if not t.is_dir()]
        if missing:
            raise UserError(f"{missing[0]}: no such run folder; pass one recipe, or folders "
                            "written by netsize grow, train, prune or compare.")
        run_dirs, name, goals = list(targets), "runs", [0.7, 0.8]
        folder = out or new_run_dir(Path("results") / "compare" / name, 0)
    finish(folder, [read_folder(d) for d in run_dirs], require or [], min_metric, max_params,
           json_out, console, goals)


def finish(folder: Path, parts: list[dict[str, Any]], require: list[str],
           min_metric: float | None, max_params: int | None, json_out: bool, console: Console,
           targets: list[float]) -> None:
    rows = [r for p in parts for r in p["rows"]]
    if not rows:
        raise UserError("the folders hold no checkpoints to compare.")
    summaries, ref = summarise(rows, _compute(parts), targets)
    gates = [check_requirement(text, summaries) for text in require]
    if min_metric is not None or max_params is not None:
        gates.append(check_target(rows, min_metric, max_params))
    folder.mkdir(parents=True, exist_ok=True)
    marked = mark_front(rows)
    write_csv(folder / "points.csv", marked, POINT_COLUMNS)
    write_json(folder / "points.json", marked)
    summary = {"reference_point": {"params": ref[0], "val_metric": ref[1]},
               "methods": [vars(s) for s in summaries],
               "gates": [{"passed": ok, "check": text} for ok, text in gates]}
    write_json(folder / "summary.json", summary)
    _plot(folder / "front.png", rows)
    (folder / "report.md").write_text(_report(rows, summaries, ref, gates))
    Console(stderr=json_out, width=max(console.width, 140)).print(_table(summaries, folder))
    for line in _claims(summaries):
        console.print(line.removeprefix("- "), highlight=False)
    if json_out:
        print(json.dumps(summary, indent=2, default=str))
    failed = [text for ok, text in gates if not ok]
    if failed:
        console.print(f"[bold red]gate failed:[/] {failed[0]}", highlight=False)
        raise typer.Exit(code=1)


def _table(summaries: list[MethodSummary], folder: Path) -> Table:
    rows = _summary_rows(summaries)
    table = Table(title="netsize compare", caption=f"outputs in {folder}")
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "method" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table
