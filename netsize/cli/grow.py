"""`netsize grow RECIPE`: train a small network that grows, writing a checkpoint at every size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from netsize.cli.common import (
    DeviceOption,
    OverwriteOption,
    SeedOption,
    SetOption,
    StorageOption,
    StudyOption,
    ThreadsOption,
    TrialsOption,
    console,
    new_run_dir,
    recipe_overrides,
    resolve_device,
    set_threads,
)
from netsize.cli.guard import start_run_dir, user_errors_exit_2
from netsize.cli.progress import TrainingBar, bar, front_table
from netsize.cli.study import study_command
from netsize.recipe import Recipe, load_recipe
from netsize.runs.grow import run_grow
from netsize.runs.study import grow_trials

OutOption = Annotated[Path | None, typer.Option(
    help="Run folder (default: results/<command>/<recipe>/<timestamp>-s<seed>).")]


@user_errors_exit_2
def grow(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/digits.yaml.")],
    set_: SetOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    trials: TrialsOption = None,
    storage: StorageOption = None,
    study: StudyOption = None,
) -> None:
    """Train a small network and grow it when more capacity pays.

    Every growth event leaves a checkpoint, so one run yields models at many sizes, and the
    Pareto front of validation metric against parameters is written beside them. With --trials,
    an Optuna study searches the recipe's search.space; the same command resumes it.

    Example:  netsize grow recipes/digits.yaml --set grow.tau=1.5 --seed 1
    Example:  netsize grow recipes/digits.yaml --trials 8
    """
    parsed = load_recipe(recipe, recipe_overrides(set_, seed))
    torch_device = resolve_device(device)
    set_threads(threads)
    if trials is not None:
        study_command("grow", recipe.stem, parsed, str(recipe), trials, storage, study, out,
                      grow_trials(recipe.stem, torch_device))
        return
    train_and_report("grow", recipe, parsed, out, torch_device, overwrite)


def train_and_report(command: str, recipe_path: Path, parsed: Recipe, out: Path | None,
                     device: torch.device, overwrite: bool) -> None:
    """grow and train: one run with a progress bar, then the front as a table."""
    run_dir = out or new_run_dir(Path("results") / command / recipe_path.stem, parsed.seed)
    console.print(f"netsize {command} [bold]{recipe_path}[/] on {device} -> {run_dir}")
    with start_run_dir(run_dir, overwrite), bar() as progress:
        result = run_grow(parsed, run_dir, name=recipe_path.stem, device=device,
                          observer=TrainingBar(progress))
    table = front_table(result.front, f"{len(result.summary.events)} growth events; outputs "
                        f"in {run_dir}", f"Pareto front over {len(result.summary.checkpoints)} "
                        "checkpoints")
    console.print(table)
