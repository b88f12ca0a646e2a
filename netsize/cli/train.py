"""`netsize train RECIPE`: train at a fixed size (growth off), e.g. the original to prune."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netsize.cli.common import (
    DeviceOption,
    OverwriteOption,
    SeedOption,
    SetOption,
    ThreadsOption,
    recipe_overrides,
    resolve_device,
    set_threads,
)
from netsize.cli.grow import OutOption, ResumeOption, TensorBoardOption, train_and_report
from netsize.cli.guard import user_errors_exit_2
from netsize.recipe import load_recipe


@user_errors_exit_2
def train(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/digits_mlp.yaml.")],
    set_: SetOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    resume: ResumeOption = None,
    tensorboard: TensorBoardOption = False,
) -> None:
    """Train the recipe's network at a fixed size: the recipe's grow section is ignored.

    Writes the same outputs as grow; checkpoints/best is what netsize prune takes.

    Example: netsize train recipes/digits_mlp.yaml --out results/train/run1
    Example: netsize train recipes/digits_mlp.yaml --resume results/train/run1
    """
    parsed = load_recipe(recipe, [*recipe_overrides(set_, seed), "grow.trigger=none"])
    torch_device = resolve_device(device)
    set_threads(threads)
    train_and_report("train", recipe, parsed, out, torch_device, overwrite, resume, tensorboard)
