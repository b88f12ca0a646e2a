"""`netsize compare`: grow, prune and fixed sizes side by side, with reports and CI gates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from netsize.cli.common import (
    DeviceOption,
    OverwriteOption,
    SetOption,
    ThreadsOption,
    new_run_dir,
    resolve_device,
    set_threads,
)
from netsize.cli.guard import start_run_dir, user_errors_exit_2
from netsize.cli.progress import bar
from netsize.cli.tables import compare_tables
from netsize.recipe import load_recipe
from netsize.runs.compare import METHODS, check_run_dirs, compare_recipe, compare_runs
from netsize.runs.compare_checks import check_comparable


@user_errors_exit_2
def compare(
    targets: Annotated[list[Path], typer.Argument(
        help="A recipe to run every method on, or run folders to compare as they are.")],
    methods: Annotated[str, typer.Option(help="Comma-separated methods to run.")] =
        ", ".join(METHODS),  # spaced, so --help wraps the default instead of cutting it off
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
        help="Run folder (default: a new one in results/compare/NAME/, named by the time and the "
             "seed).")] = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Grow, prune and fixed sizes on the same data and seeds; fronts, hypervolumes, gates.

    Exit code 0 when every gate holds, 1 when one fails, 2 on bad input.

    Example: netsize compare recipes/digits.yaml --require 'grow-senn >= fixed'
    Example: netsize compare results/*/digits/* --min-metric 0.95
    """
    console = Console(stderr=json_out)
    set_threads(threads)
    gates = {"require": require or [], "min_metric": min_metric, "max_params": max_params}
    if len(targets) == 1 and targets[0].is_file():
        recipe = load_recipe(targets[0], list(set_ or []))
        chosen = [m.strip() for m in methods.split(",") if m.strip()]
        folder = out or new_run_dir(Path("results") / "compare" / targets[0].stem, recipe.seed)
        with start_run_dir(folder, overwrite), bar(console) as progress:
            task = progress.add_task("runs", total=seeds * len(chosen), info="")
            result = compare_recipe(recipe, chosen, seeds, folder, resolve_device(device),
                                    budget, lambda: progress.advance(task), **gates)
    else:
        folder = out or new_run_dir(Path("results") / "compare" / "runs", 0)
        check_run_dirs(targets)  # before the output folder is made
        check_comparable(targets)
        with start_run_dir(folder, overwrite):
            result = compare_runs(targets, folder, **gates)  # type: ignore[arg-type]
    for line in result.warnings:
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    for table in compare_tables(result.summaries, folder):
        console.print(table)
    for line in result.claims:
        console.print(line.removeprefix("- "), highlight=False)
    if json_out:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    if result.failed:
        console.print(f"[bold red]gate failed:[/] {result.failed[0]}", highlight=False)
        raise typer.Exit(code=1)
    if result.gates:
        console.print(f"[bold green]gates passed:[/] {'; '.join(t for _, t in result.gates)}",
                      highlight=False, soft_wrap=True)  # one line, for CI logs to grep
