"""`netsize prune TARGET`: prune-and-transfer a trained network, against a from-scratch control."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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
from netsize.cli.study import study_command
from netsize.cli.tables import prune_table
from netsize.runs.prune import load_original, run_prune
from netsize.runs.study import prune_trials


def _epsilon_override(epsilons: list[str] | None) -> list[str]:
    values = [v.strip() for item in epsilons or [] for v in item.split(",") if v.strip()]
    return [f"prune.epsilon=[{', '.join(values)}]"] if values else []


@user_errors_exit_2
def prune(
    target: Annotated[Path, typer.Argument(
        help="A netsize checkpoint folder, or a recipe naming a timm/torchvision model.")],
    recipe: Annotated[Path | None, typer.Option(
        help="Recipe for data and fine-tuning (default: the one the checkpoint carries).")] = None,
    epsilon: Annotated[list[str] | None, typer.Option(
        help="Pruning parameter; repeat it or give a list: --epsilon 0.5,0.8.")] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder (default: a new one in results/prune/NAME/, named by the time and the "
             "seed).")] = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    trials: TrialsOption = None,
    storage: StorageOption = None,
    study: StudyOption = None,
    no_latency: Annotated[bool, typer.Option(
        "--no-latency", help="Leave the CPU latency columns out (prune.latency=false).")] = False,
) -> None:
    """Remove low-variability units, transfer the rest into a smaller dense network, fine-tune.

    Reports the original, the pruned-and-transferred network and the same small architecture
    trained from scratch: parameters, FLOPs, CPU latency and accuracy (or R^2).

    Example: netsize prune results/train/digits_mlp/RUN/checkpoints/best
    Example: netsize prune results/train/digits/RUN/checkpoints/best --epsilon 1
    """
    overrides = recipe_overrides(set_, seed, *_epsilon_override(epsilon),
                                 *(["prune.latency=false"] if no_latency else []))
    torch_device = resolve_device(device)
    set_threads(threads)
    original, splits = load_original(target, recipe, overrides)
    if trials is not None:
        study_command("prune", original.name, original.recipe, str(target), trials, storage,
                      study, out, prune_trials(original, splits, torch_device))
        return
    run_dir = out or new_run_dir(Path("results") / "prune" / original.name, original.recipe.seed)
    console.print(f"netsize prune [bold]{target}[/] on {torch_device} -> {run_dir}")
    steps = 2 * len(original.recipe.prune.epsilons(original.foreign))
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                        TimeElapsedColumn(), TextColumn("{task.completed}/{task.total}"),
                        console=console)
    with start_run_dir(run_dir, overwrite), progress:
        task = progress.add_task("pruning", total=steps)
        result = run_prune(original, splits, run_dir, device=torch_device,
                           advance=lambda: progress.advance(task))
    console.print(prune_table(result.rows, run_dir))
