"""`run_study`: an Optuna study of whole grow or prune runs, resumable and shareable by workers.

The study folder holds recipe.yaml, study.db (unless another storage is given), a folder per
trial, trials.csv, points.csv (every checkpoint of every completed trial), the front over all of
them (CSV, JSON, PNG) and report.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from netsize.data import Splits
from netsize.files import atomic_write_text, write_csv
from netsize.recipe import Recipe, derive, recipe_to_dict
from netsize.report import Point, markdown_table, pareto_front, write_front
from netsize.runs.grow import run_grow
from netsize.runs.prune import Original, run_prune

POINT_COLUMNS = ["trial", "tag", "params", "flops", "val_metric", "test_metric", "path"]
FRONT_COLUMNS = [("trial", "trial"), ("tag", "checkpoint"), ("params", "parameters"),
                 ("flops", "FLOPs/example"), ("val_metric", "validation"),
                 ("test_metric", "test")]
TRIAL_COLUMNS = [("trial", "trial"), ("state", "state"), ("val_metric", "validation"),
                 ("params", "parameters"), ("early_stopped", "early stopped"),
                 ("fail_reason", "failure")]


@dataclass
class StudyResult:
    study_dir: Path
    study_name: str
    storage_url: str
    front: list[Point]  # over every checkpoint of every completed trial
    trials: list[dict[str, Any]]


@dataclass
class StudyProgress:
    completed: int
    wanted: int
    front_size: int
    best_val: float


def study_dir_for(command: str, name: str, out: Path | None) -> Path:
    """Fixed per recipe (not timestamped), so the same command resumes the same study."""
    return out or Path("results") / "search" / f"{command}-{name}"


def run_study(command: str, name: str, recipe: Recipe, origin: str, trials: int,
              run_trial: Any, study_dir: Path, storage_url: str | None = None,
              study_name: str | None = None,
              on_progress: Callable[[StudyProgress], None] | None = None) -> StudyResult:
    """Run trials until the study holds `trials` completed ones (across all its workers).

    run_trial(recipe, trial_dir, stopper) -> TrialResult; see `grow_trials`, `prune_trials`.
    """
    from netsize.search import (
        all_points,
        check_space,
        default_url,
        has_heartbeat,
        make_storage,
        open_study,
        run_worker,
        trial_rows,
    )

    recipe = derive(recipe, {"search.trials": trials}, origin)
    check_space(recipe, origin)
    url = storage_url or default_url(study_dir)
    cfg = recipe.search
    storage = make_storage(url, cfg.heartbeat_seconds, cfg.max_retries)  # refused: no folder
    study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study_dir / "recipe.yaml",
                      yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    # Workers sharing an explicit storage sample from different seeds (their process ids).
    salt = os.getpid() if storage_url is not None else 0
    study = open_study(storage, study_name or f"{command}-{name}", cfg, salt)

    def update() -> None:
        if on_progress is None:
            return
        rows = all_points(study)
        done = sum(1 for r in trial_rows(study) if r["state"] == "complete")
        best = max((r["val_metric"] for r in rows), default=float("nan"))
        on_progress(StudyProgress(min(done, trials), trials, len(pareto_front(rows)), best))

    update()
    try:
        run_worker(study, recipe, origin, run_trial, study_dir / "trials",
                   heartbeat=has_heartbeat(storage), on_trial=update)
    finally:  # a study whose every trial failed still leaves trials.csv and its report
        front, rows = write_study_outputs(study_dir, study.study_name, study)
    return StudyResult(study_dir, study.study_name, url, front, rows)


def write_study_outputs(study_dir: Path, name: str, study: Any) -> tuple[list[Point], list]:
    from netsize.search import all_points, trial_rows

    points = all_points(study)
    trials = trial_rows(study)
    params = sorted({k for r in trials for k in r if k.startswith("param:")})
    flops = ["flops"] if any(r["flops"] is not None for r in trials) else []
    write_csv(study_dir / "trials.csv", trials, ["trial", "state", "val_metric", "params",
                                                 *flops, "early_stopped", "fail_reason",
                                                 *params])
    write_csv(study_dir / "points.csv", points, POINT_COLUMNS + params)
    front = write_front(study_dir, points, POINT_COLUMNS + params, f"netsize study: {name}",
                        "metric", about={"study": name})
    states: dict[str, int] = {}
    for r in trials:
        states[r["state"]] = states.get(r["state"], 0) + 1
    lines = [f"# netsize study: {name}", "",
             "Trials: " + ", ".join(f"{v} {k}" for k, v in sorted(states.items())),
             f"Points (every checkpoint of every completed trial): {len(points)}", "",
             "## Pareto front over every checkpoint", "", markdown_table(front, FRONT_COLUMNS),
             "", "![front](front.png)", "", "## Trials", "",
             markdown_table(trials, _trial_columns(bool(flops))), ""]
    atomic_write_text(study_dir / "report.md", "\n".join(lines))
    return front, trials


def _trial_columns(flops: bool) -> list[tuple[str, str]]:
    """The trials table's columns: FLOPs per example after parameters when they are an
    objective of the study."""
    if not flops:
        return TRIAL_COLUMNS
    at = [key for key, _ in TRIAL_COLUMNS].index("params") + 1
    return [*TRIAL_COLUMNS[:at], ("flops", "FLOPs/example"), *TRIAL_COLUMNS[at:]]


def grow_trials(name: str, device: torch.device) -> Any:
    """A trial of a grow study: one whole grow run in the trial's folder."""
    from netsize.search import TrialResult

    def run(recipe: Recipe, trial_dir: Path, stopper: Any) -> Any:
        result = run_grow(recipe, trial_dir, name=name, device=device, stopper=stopper)
        points = [dict(p, path=str(trial_dir / "checkpoints" / p["tag"]))
                  for p in result.summary.checkpoints]
        return TrialResult(points, [r["val_metric"] for r in result.summary.history],
                           result.summary.early_stopped)

    return run


def prune_trials(original: Original, splits: Splits, device: torch.device) -> Any:
    """A trial of a prune study: the same original pruned with the sampled prune/train keys."""
    from netsize.search import TrialResult

    def run(recipe: Recipe, trial_dir: Path, stopper: Any) -> Any:
        trial_original = Original(original.net, recipe, original.name, original.epochs,
                                  original.foreign)
        result = run_prune(trial_original, splits, trial_dir, device=device)
        points = [dict(r, tag=f"eps-{r['epsilon']:g}", step=0, epoch=0,
                       path=str(trial_dir / r["path"]))
                  for r in result.rows if r["variant"] == "pruned+transfer"]
        return TrialResult(points)

    return run
