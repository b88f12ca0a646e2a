"""`--trials N` on grow and prune: an Optuna study of whole runs, resumable and shareable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netsize.cli.common import console
from netsize.io import write_csv, write_json
from netsize.recipe import Recipe, recipe_to_dict
from netsize.report import markdown_table, pareto_front, plot_front
from netsize.search import (
    TrialResult,
    all_points,
    check_space,
    default_url,
    has_heartbeat,
    make_storage,
    open_study,
    run_worker,
    trial_rows,
)
from netsize.search.study import RunTrial

POINT_COLUMNS = ["trial", "tag", "params", "flops", "val_metric", "test_metric", "path"]
FRONT_COLUMNS = [("trial", "trial"), ("tag", "checkpoint"), ("params", "parameters"),
                 ("flops", "FLOPs/example"), ("val_metric", "validation"),
                 ("test_metric", "test")]


def study_dir_for(command: str, name: str, out: Path | None) -> Path:
    """Fixed per recipe (not timestamped), so the same command resumes the same study."""
    return out or Path("results") / "search" / f"{command}-{name}"


def run_study(command: str, name: str, recipe: Recipe, origin: str, trials: int,
              storage_url: str | None, study_name: str | None, study_dir: Path,
              run_trial: RunTrial) -> None:
    recipe = recipe.model_copy(update={"search": recipe.search.model_copy(
        update={"trials": trials})})
    check_space(recipe, origin)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe),
                                                          sort_keys=False))
    url = storage_url or default_url(study_dir)
    cfg = recipe.search
    storage = make_storage(url, cfg.heartbeat_seconds, cfg.max_retries)
    # Workers sharing an explicit storage sample from different seeds (their process ids).
    salt = os.getpid() if storage_url is not None else 0
    study = open_study(storage, study_name or f"{command}-{name}", cfg, salt)
    console.print(f"study [bold]{study.study_name}[/] in {url}: {trials} trials wanted, "
                  f"sampler {cfg.sampler} (seed {cfg.sampler_seed})")
    with _progress() as progress:
        task = progress.add_task("trials", total=trials, info="")

        def update() -> None:
            rows = all_points(study)
            done = sum(1 for r in trial_rows(study) if r["state"] == "complete")
            front = pareto_front(rows) if rows else []
            best = max((r["val_metric"] for r in rows), default=float("nan"))
            progress.update(task, completed=min(done, trials),
                            info=f"front {len(front)} points, best val {best:.4f}")

        update()
        run_worker(study, recipe, origin, run_trial, study_dir / "trials",
                   heartbeat=has_heartbeat(storage), on_trial=update)
    front = write_study_outputs(study_dir, study.study_name, study, recipe)
    console.print(_front_table(front, study_dir))


def write_study_outputs(study_dir: Path, name: str, study: Any, recipe: Recipe) -> list[dict]:
    points = all_points(study)
    trials = trial_rows(study)
    front = pareto_front(points) if points else []
    params = sorted({k for r in trials for k in r if k.startswith("param:")})
    write_csv(study_dir / "trials.csv", trials, ["trial", "state", "val_metric", "params",
                                                 "early_stopped", "fail_reason", *params])
    write_csv(study_dir / "points.csv", points, POINT_COLUMNS + params)
    write_csv(study_dir / "front.csv", front, POINT_COLUMNS + params)
    write_json(study_dir / "front.json", {"study": name, "objectives": {
        "val_metric": "maximize", "params": "minimize"}, "points": front})
    if points:
        plot_front(study_dir / "front.png", points, front, f"netsize study: {name}",
                   "metric")
    states: dict[str, int] = {}
    for r in trials:
        states[r["state"]] = states.get(r["state"], 0) + 1
    lines = [f"# netsize study: {name}", "",
             "Trials: " + ", ".join(f"{v} {k}" for k, v in sorted(states.items())),
             f"Points (every checkpoint of every completed trial): {len(points)}", "",
             "## Pareto front over every checkpoint", "", markdown_table(front, FRONT_COLUMNS),
             "", "![front](front.png)", "", "## Trials", "",
             markdown_table(trials, [("trial", "trial"), ("state", "state"),
                                     ("val_metric", "validation"), ("params", "parameters"),
                                     ("early_stopped", "early stopped"),
                                     ("fail_reason", "failure")]), ""]
    (study_dir / "report.md").write_text("\n".join(lines))
    return front


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console)


def _front_table(front: list[dict[str, Any]], study_dir: Path) -> Table:
    table = Table(title="Study front over every checkpoint of every trial",
                  caption=f"outputs in {study_dir}")
    for header in ("trial", "checkpoint", "parameters", "validation", "test"):
        table.add_column(header, justify="left" if header == "checkpoint" else "right")
    for r in front:
        table.add_row(str(r["trial"]), r["tag"], f"{r['params']:,}", f"{r['val_metric']:.4f}",
                      f"{r['test_metric']:.4f}")
    return table


def grow_trial_runner(name: str, device: torch.device) -> RunTrial:
    from netsize.cli.grow import run_grow

    def run(recipe: Recipe, trial_dir: Path, stopper: Any) -> TrialResult:
        summary, _ = run_grow(recipe, name, trial_dir, device, show_progress=False,
                              stopper=stopper)
        points = [dict(p, path=str(trial_dir / "checkpoints" / p["tag"]))
                  for p in summary.checkpoints]
        return TrialResult(points, [r["val_metric"] for r in summary.history],
                           summary.early_stopped)

    return run
