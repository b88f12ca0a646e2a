"""`netsize grow RECIPE`: train a small network that grows, writing a checkpoint at every size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from netsize.cli.common import (
    DeviceOption,
    SeedOption,
    SetOption,
    StorageOption,
    StudyOption,
    ThreadsOption,
    TrialsOption,
    console,
    new_run_dir,
    resolve_device,
    set_threads,
    user_errors_exit_2,
)
from netsize.data import Splits, load_data
from netsize.errors import UserError
from netsize.io import save_checkpoint, write_csv, write_json
from netsize.recipe import Recipe, load_recipe, recipe_to_dict
from netsize.report import grow_report, pareto_front, plot_front
from netsize.train import Checkpoint, RunSummary, Trainer

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "val_metric", "test_metric",
                  "params", "flops", "lr", "seconds", "architecture"]
POINT_COLUMNS = ["tag", "step", "epoch", "params", "flops", "val_metric", "test_metric"]


class FileReporter:
    """Writes checkpoints as they happen and drives a rich progress bar."""

    def __init__(self, run_dir: Path, recipe: Recipe, splits: Splits, progress: Progress | None):
        self.run_dir, self.recipe, self.splits = run_dir, recipe, splits
        self.progress = progress
        self.task_id: Any = None
        self.events: list[dict[str, Any]] = []
        self.last = ""

    def start(self, total_steps: int) -> None:
        if self.progress is not None:
            self.task_id = self.progress.add_task("training", total=total_steps, info="")

    def step(self, step: int, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step, info=self.last)

    def epoch(self, record: dict[str, Any]) -> None:
        self.last = (f"epoch {record['epoch']} val {record['val_metric']:.4f} "
                     f"{record['params']:,} params")

    def event(self, record: dict[str, Any]) -> None:
        self.events.append(record)
        write_json(self.run_dir / "events.json", self.events)
        if self.progress is not None:
            change = (f"width layer {record['layer']} +{record['units']} units"
                      if record["kind"] == "width" else
                      f"depth: a {record['units']}-unit layer after layer {record['layer']}")
            self.progress.console.print(
                f"[green]grow[/] step {record['step']}: {change} -> {record['architecture']} "
                f"({record['params_after']:,} params)", highlight=False)

    def checkpoint(self, ckpt: Checkpoint) -> None:
        meta = {
            "tag": ckpt.tag, "step": ckpt.step, "epoch": ckpt.epoch, "params": ckpt.params,
            "flops": ckpt.flops, "val_metric": ckpt.val_metric, "test_metric": ckpt.test_metric,
            "task": self.splits.task, "recipe": recipe_to_dict(self.recipe),
            "events": list(self.events),
        }
        assert ckpt.spec is not None  # grow runs train netsize's own networks
        save_checkpoint(self.run_dir / "checkpoints" / ckpt.tag, ckpt.spec, ckpt.state, meta)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
                    transient=False)


def run_grow(recipe: Recipe, recipe_name: str, run_dir: Path, device: torch.device,
             show_progress: bool = True, stopper: Callable[[dict[str, Any]], bool] | None = None,
             flops_budget: float | None = None) -> tuple[RunSummary, list[dict[str, Any]]]:
    """Train with growth and write every output into run_dir. Returns the summary and front."""
    splits = load_data(recipe.data, recipe.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    progress = _progress() if show_progress else None
    reporter = FileReporter(run_dir, recipe, splits, progress)
    trainer = Trainer(recipe, splits, device, reporter, stopper=stopper,
                      flops_budget=flops_budget)
    if progress is not None:
        with progress:
            summary = trainer.fit()
    else:
        summary = trainer.fit()
    front = write_outputs(run_dir, recipe_name, recipe, splits.task, summary, trainer)
    return summary, front


def write_outputs(run_dir: Path, name: str, recipe: Recipe, task: str, summary: RunSummary,
                  trainer: Trainer) -> list[dict[str, Any]]:
    metric = "accuracy" if task == "classification" else "R^2"
    write_csv(run_dir / "metrics.csv", summary.history, METRIC_COLUMNS)
    write_json(run_dir / "metrics.json", summary.history)
    write_json(run_dir / "events.json", summary.events)
    points = [dict(p, path=f"checkpoints/{p['tag']}") for p in summary.checkpoints]
    front = pareto_front(points)
    write_csv(run_dir / "checkpoints.csv", points, POINT_COLUMNS + ["path"])
    write_csv(run_dir / "front.csv", front, POINT_COLUMNS + ["path"])
    write_json(run_dir / "front.json", {"metric": metric, "objectives":
                                        {"val_metric": "maximize", "params": "minimize"},
                                        "points": front})
    plot_front(run_dir / "front.png", points, front, f"netsize grow: {name}", metric)
    best = max(summary.history, key=lambda r: r["val_metric"])
    first = summary.history[0]
    info = {
        "recipe": name, "task": task, "metric": metric,
        "start_architecture": trainer.initial_architecture,
        "start_params": trainer.initial_params,
        "final_architecture": summary.history[-1]["architecture"],
        "final_params": summary.history[-1]["params"],
        "best_val": best["val_metric"], "best_test": best["test_metric"],
        "best_epoch": best["epoch"], "events": len(summary.events),
        "wall_seconds": summary.wall_seconds, "growth_seconds": summary.growth_seconds,
        "growth_share": summary.growth_seconds / max(summary.wall_seconds, 1e-9),
        "train_flops": summary.train_flops, "early_stopped": summary.early_stopped,
        "grow": {"trigger": recipe.grow.trigger, "init": recipe.grow.init},
        "first_epoch_params": first["params"],
    }
    write_json(run_dir / "summary.json", info)
    (run_dir / "report.md").write_text(grow_report(name, info, summary.events,
                                                   points, front))
    return front


def final_table(summary: RunSummary, front: list[dict[str, Any]], run_dir: Path) -> Table:
    table = Table(title=f"Pareto front over {len(summary.checkpoints)} checkpoints")
    for header in ("checkpoint", "step", "parameters", "validation", "test"):
        table.add_column(header, justify="right" if header != "checkpoint" else "left")
    for row in front:
        table.add_row(row["tag"], str(row["step"]), f"{row['params']:,}",
                      f"{row['val_metric']:.4f}", f"{row['test_metric']:.4f}")
    table.caption = f"{len(summary.events)} growth events; outputs in {run_dir}"
    return table


@user_errors_exit_2
def grow(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/digits.yaml.")],
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder (default: results/grow/<recipe>/<timestamp>-s<seed>).")] = None,
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
    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    parsed = load_recipe(recipe, overrides)
    torch_device = resolve_device(device)
    set_threads(threads)
    if trials is not None:
        from netsize.cli.search import grow_trial_runner, run_study, study_dir_for

        if trials < 1:
            raise UserError(f"--trials {trials}: give 1 or more.")
        run_study("grow", recipe.stem, parsed, str(recipe), trials, storage, study,
                  study_dir_for("grow", recipe.stem, out),
                  grow_trial_runner(recipe.stem, torch_device))
        return
    run_dir = out or new_run_dir(Path("results") / "grow" / recipe.stem, parsed.seed)
    console.print(f"netsize grow [bold]{recipe}[/] on {torch_device} -> {run_dir}")
    summary, front = run_grow(parsed, recipe.stem, run_dir, torch_device)
    console.print(final_table(summary, front, run_dir))
