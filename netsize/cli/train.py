"""`netsize train RECIPE`: train at a fixed size (growth off), e.g. the original to prune."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netsize.cli.common import (
    DeviceOption,
    SeedOption,
    SetOption,
    ThreadsOption,
    console,
    new_run_dir,
    resolve_device,
    set_threads,
    user_errors_exit_2,
)
from netsize.cli.grow import final_table, run_grow
from netsize.recipe import load_recipe


@user_errors_exit_2
def train(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/digits_mlp.yaml.")],
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder (default: results/train/<recipe>/<timestamp>-s<seed>).")] = None,
    device: DeviceOption = "auto",
    seed: SeedOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Train the recipe's network at a fixed size: the recipe's grow section is ignored.

    Writes the same outputs as grow; checkpoints/best is what netsize prune takes.

    Example:  netsize train recipes/digits_mlp.yaml --out results/train/digits_mlp/run1
    """
    overrides = [*(set_ or []), "grow.trigger=none"]
    if seed is not None:
        overrides.append(f"seed={seed}")
    parsed = load_recipe(recipe, overrides)
    torch_device = resolve_device(device)
    set_threads(threads)
    run_dir = out or new_run_dir(Path("results") / "train" / recipe.stem, parsed.seed)
    console.print(f"netsize train [bold]{recipe}[/] on {torch_device} -> {run_dir}")
    summary, front = run_grow(parsed, recipe.stem, run_dir, torch_device)
    console.print(final_table(summary, front, run_dir))
