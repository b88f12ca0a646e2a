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
from netsize.cli.progress import TrainingBar, bar
from netsize.cli.study import study_command
from netsize.cli.tables import front_table
from netsize.errors import UserError
from netsize.recipe import Recipe, load_recipe
from netsize.runs.grow import run_grow
from netsize.runs.study import grow_trials
from netsize.tensorboard import Fanout, TensorBoardLog, check_available

OutOption = Annotated[Path | None, typer.Option(
    help="Run folder (default: a new folder in results/ named after the command, the "
         "recipe, the time and the seed).")]
TensorBoardOption = Annotated[bool, typer.Option(
    "--tensorboard", help="Also write TensorBoard scalars to RUN_DIR/tensorboard.")]
ResumeOption = Annotated[Path | None, typer.Option(
    help="Continue the run in this folder from its last finished epoch (give the recipe "
         "and --set options it was started with).")]


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
    resume: ResumeOption = None,
    tensorboard: TensorBoardOption = False,
) -> None:
    """Train a small network and grow it when more capacity pays.

    Every growth event leaves a checkpoint, so one run yields models at many sizes, and the
    Pareto front of validation metric against parameters is written beside them. With --trials,
    an Optuna study searches the recipe's search.space; the same command resumes it.

    Example: netsize grow recipes/digits.yaml --set grow.tau=1.5 --seed 1
    Example: netsize grow recipes/digits.yaml --trials 8
    Example: netsize grow recipes/digits.yaml --resume results/grow/digits/RUN
    """
    parsed = load_recipe(recipe, recipe_overrides(set_, seed))
    torch_device = resolve_device(device)
    set_threads(threads)
    if trials is not None:
        if resume is not None:
            raise UserError("--resume continues one run; a study (--trials) resumes by running "
                            "the same command again, so drop --resume.")
        study_command("grow", recipe.stem, parsed, str(recipe), trials, storage, study, out,
                      grow_trials(recipe.stem, torch_device))
        return
    train_and_report("grow", recipe, parsed, out, torch_device, overwrite, resume, tensorboard)


def train_and_report(command: str, recipe_path: Path, parsed: Recipe, out: Path | None,
                     device: torch.device, overwrite: bool, resume: Path | None,
                     tensorboard: bool) -> None:
    """grow and train: one run with a progress bar, then the front as a table.

    Every run saves what resuming needs at each epoch end; --resume continues one."""
    if resume is not None and (out is not None or overwrite):
        raise UserError("--resume continues the run in its own folder; drop --out and "
                        "--overwrite.")
    run_dir = resume or out or new_run_dir(Path("results") / command / recipe_path.stem,
                                           parsed.seed)
    if tensorboard:
        check_available()
    verb = "resuming" if resume else f"netsize {command}"
    console.print(f"{verb} [bold]{recipe_path}[/] on {device} -> {run_dir}")
    with start_run_dir(run_dir, overwrite, resume is not None), bar() as progress:
        observer = TrainingBar(progress, parsed.train.epochs)
        result = run_grow(parsed, run_dir, name=recipe_path.stem, device=device,
                          observer=Fanout(observer, TensorBoardLog(run_dir / "tensorboard"))
                          if tensorboard else observer, resumable=True,
                          resume=resume is not None)
    table = front_table(result.front, f"{len(result.summary.events)} growth events; outputs "
                        f"in {run_dir}", f"Pareto front over {len(result.summary.checkpoints)} "
                        "checkpoints")
    console.print(table)
