"""`--trials N` on grow and prune: run a study with a progress bar and print its front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netsize.cli.common import console
from netsize.cli.progress import StudyBar, bar
from netsize.cli.tables import front_table
from netsize.errors import UserError
from netsize.recipe import Recipe
from netsize.runs.study import run_study, study_dir_for


def study_command(command: str, name: str, recipe: Recipe, origin: str, trials: int,
                  storage: str | None, study: str | None, out: Path | None,
                  run_trial: Any) -> None:
    if trials < 1:
        raise UserError(f"--trials {trials}: give 1 or more.")
    study_dir = study_dir_for(command, name, out)
    console.print(f"study of {trials} trials ({recipe.search.sampler} sampler, seed "
                  f"{recipe.search.sampler_seed}) -> {study_dir}")
    with bar() as progress:
        result = run_study(command, name, recipe, origin, trials, run_trial, study_dir,
                           storage, study, StudyBar(progress, trials))
    console.print(f"study [bold]{result.study_name}[/] in {result.storage_url}")
    console.print(front_table(result.front, f"outputs in {study_dir}",
                              "Study front over every checkpoint of every trial"))
