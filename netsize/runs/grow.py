"""`run_grow`: train (and grow) a network from a recipe, writing a run folder.

The run folder holds recipe.yaml, a checkpoint at every size (checkpoints/<tag>: spec.json +
weights.safetensors), metrics.csv/json, events.json, checks.json (every growth check, grown or
not, with every candidate's score and why it was rejected), checkpoints.csv, the front (CSV,
JSON, PNG), summary.json and report.md. Nothing is printed here: progress goes to an
optional observer.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from netsize import resume as resume_state
from netsize.data import Splits, load_data
from netsize.errors import UserError
from netsize.files import atomic_write_text, write_csv, write_json
from netsize.finish import add_finished, finish_sizes
from netsize.growth import cadence, describe_cadence
from netsize.io import save_checkpoint
from netsize.preflight import check_data
from netsize.recipe import Recipe, recipe_to_dict
from netsize.report import Point, grow_report, task_metric, write_front
from netsize.train import Checkpoint, Reporter, RunSummary, SilentReporter, Trainer

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "val_metric", "test_metric",
                  "params", "flops", "train_flops", "lr", "seconds", "architecture"]
POINT_COLUMNS = ["tag", "step", "epoch", "params", "flops", "val_metric", "test_metric", "path"]


@dataclass
class GrowResult:
    run_dir: Path
    summary: RunSummary
    front: list[Point]  # Pareto front over every checkpoint of the run
    info: dict[str, Any]  # what summary.json holds


class CheckpointWriter:
    """A Reporter that writes checkpoints and events as they happen, then tells `observer`."""

    def __init__(self, run_dir: Path, recipe: Recipe, splits: Splits, observer: Reporter):
        self.run_dir, self.recipe, self.splits, self.observer = run_dir, recipe, splits, observer
        self.events: list[dict[str, Any]] = []

    def start(self, total_steps: int) -> None:
        self.observer.start(total_steps)

    def step(self, step: int, epoch: int) -> None:
        self.observer.step(step, epoch)

    def note(self, text: str) -> None:
        self.observer.note(text)

    def epoch(self, record: dict[str, Any]) -> None:
        self.observer.epoch(record)

    def event(self, record: dict[str, Any]) -> None:
        self.events.append(record)
        write_json(self.run_dir / "events.json", self.events)
        self.observer.event(record)

    def checkpoint(self, ckpt: Checkpoint) -> None:
        meta = {
            "tag": ckpt.tag, "step": ckpt.step, "epoch": ckpt.epoch, "params": ckpt.params,
            "flops": ckpt.flops, "val_metric": ckpt.val_metric, "test_metric": ckpt.test_metric,
            "task": self.splits.task, "recipe": recipe_to_dict(self.recipe),
            "events": list(self.events),
        }
        assert ckpt.spec is not None  # grow runs train netsize's own networks
        save_checkpoint(self.run_dir / "checkpoints" / ckpt.tag, ckpt.spec, ckpt.state, meta)
        self.observer.checkpoint(ckpt)


def run_grow(recipe: Recipe, run_dir: str | Path, *, name: str = "run",
             device: str | torch.device = "cpu", observer: Reporter | None = None,
             stopper: Callable[[dict[str, Any]], bool] | None = None,
             flops_budget: float | None = None, resumable: bool = False,
             resume: bool = False) -> GrowResult:
    """Train with growth (as recipe.grow says) and write every output into run_dir.

    stopper(epoch record) -> True ends training early; flops_budget caps training FLOPs.
    resumable: save what resuming needs at every epoch end (run_dir/resume/, removed when the
    run finishes). resume: continue the run in run_dir from its last epoch end, with the
    recipe it was started with; the outputs equal those of an uninterrupted run.
    """
    run_dir = Path(run_dir)
    saved = _saved_state(run_dir, recipe) if resume else None
    check_data(recipe.data)
    splits = load_data(recipe.data, recipe.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    if saved is None:
        atomic_write_text(run_dir / "recipe.yaml",
                          yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    writer = CheckpointWriter(run_dir, recipe, splits, observer or SilentReporter())
    run = {"recipe": recipe_to_dict(recipe), "name": name}
    saver = (lambda t: resume_state.save(run_dir, t, run)) if resumable or resume else None
    trainer = Trainer(recipe, splits, torch.device(device), writer, stopper=stopper,
                      flops_budget=flops_budget, saver=saver)
    if saved is not None:
        resume_state.restore(trainer, *saved, run_dir)
        writer.events = list(trainer.summary.events)
        _drop_checkpoints_after(run_dir, trainer.summary.checkpoints)
    summary = trainer.fit()
    if recipe.grow.finish_epochs and recipe.grow.trigger != "none":
        for done in finish_sizes(recipe, splits, torch.device(device), run_dir, summary,
                                 observer):
            add_finished(summary, done, writer)
    info = _summary_info(name, recipe, splits.task, summary, trainer)
    front = write_grow_outputs(run_dir, name, summary, info)
    resume_state.discard(run_dir)
    return GrowResult(run_dir, summary, front, info)


def _saved_state(run_dir: Path, recipe: Recipe) -> tuple[dict[str, torch.Tensor], dict]:
    """The run's last epoch-end state, refused when the run finished or had another recipe."""
    if (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: this run has finished; there is nothing to resume.")
    tensors, state = resume_state.load(run_dir)
    differs = resume_state.first_difference(state.get("recipe"), recipe_to_dict(recipe))
    if differs:
        raise UserError(f"{run_dir}: was started with another recipe ({differs} differs); "
                        f"resume with the recipe it recorded: {run_dir / 'recipe.yaml'}.")
    return tensors, state


def _drop_checkpoints_after(run_dir: Path, kept: list[dict[str, Any]]) -> None:
    """Checkpoints written after the saved epoch end are made again by the resumed run."""
    tags = {p["tag"] for p in kept}
    folder = run_dir / "checkpoints"
    for entry in folder.iterdir() if folder.is_dir() else []:
        if entry.is_dir() and entry.name not in tags and not entry.name.startswith("."):
            shutil.rmtree(entry)


def _summary_info(name: str, recipe: Recipe, task: str, summary: RunSummary,
                  trainer: Trainer) -> dict[str, Any]:
    best = max(summary.history, key=lambda r: r["val_metric"])
    return {
        "recipe": name, "task": task, "metric": task_metric(task),
        "start_architecture": trainer.initial_architecture,
        "start_params": trainer.initial_params,
        "final_architecture": summary.history[-1]["architecture"],
        "final_params": summary.history[-1]["params"],
        "best_val": best["val_metric"], "best_test": best["test_metric"],
        "best_epoch": best["epoch"], "events": len(summary.events),
        "wall_seconds": summary.wall_seconds, "growth_seconds": summary.growth_seconds,
        "growth_share": summary.growth_seconds / max(summary.wall_seconds, 1e-9),
        "train_flops": summary.train_flops, "early_stopped": summary.early_stopped,
        # the cadence in steps as the run used it (the recipe keeps the unit it was given in)
        "grow": {"trigger": recipe.grow.trigger, "init": recipe.grow.init,
                 "steps_per_epoch": trainer.steps_per_epoch,
                 "cadence_steps": cadence(trainer.grow_cfg) if trainer.grow else {}},
        "cadence": f"{describe_cadence(recipe.grow, trainer.grow_cfg)} "
                   f"({trainer.steps_per_epoch} steps per epoch)" if trainer.grow else "",
        "first_epoch_params": summary.history[0]["params"],
        "growth_stopped": why_growth_stopped(recipe, summary, trainer),
        "compile_seconds": summary.compile_seconds,
        "timing": timing(trainer.device),
    }


def timing(device: torch.device) -> dict[str, Any]:
    """Where the wall time was measured: compare shows wall times only when these agree."""
    return {"device": device.type, "threads": torch.get_num_threads(), "host": platform.node()}


def why_growth_stopped(recipe: Recipe, summary: RunSummary, trainer: Trainer) -> str:
    """One sentence for the report: why the run ended at its size."""
    cfg = recipe.grow
    if cfg.trigger == "none":
        return "growth was off (grow.trigger: none)."
    if cfg.trigger == "schedule":
        return f"the schedule made {len(summary.events)} growth events (grow.schedule)."
    if len(summary.events) >= cfg.max_events:
        return f"growth stopped at grow.max_events ({cfg.max_events})."
    if not summary.checks:
        return (f"no growth check was due ({describe_cadence(cfg, trainer.grow_cfg)}, "
                f"against the run's {trainer.total_steps} steps).")
    last = summary.checks[-1]
    return (f"{len(summary.checks)} checks, {len(summary.events)} grew; the last check (step "
            f"{last['step']}) did not grow: {last['reason']}." if not last["grew"] else
            f"{len(summary.checks)} checks, {len(summary.events)} grew; the last check grew.")


def write_grow_outputs(run_dir: Path, name: str, summary: RunSummary,
                       info: dict[str, Any]) -> list[Point]:
    write_csv(run_dir / "metrics.csv", summary.history, METRIC_COLUMNS)
    write_json(run_dir / "metrics.json", summary.history)
    write_json(run_dir / "events.json", summary.events)
    write_json(run_dir / "checks.json", summary.checks)
    points: list[Point] = [Point(**p, path=f"checkpoints/{p['tag']}")  # type: ignore[typeddict-item]
                           for p in summary.checkpoints]
    write_csv(run_dir / "checkpoints.csv", points, POINT_COLUMNS)
    front = write_front(run_dir, points, POINT_COLUMNS, f"netsize grow: {name}", info["metric"])
    write_json(run_dir / "summary.json", info)
    atomic_write_text(run_dir / "report.md",
                      grow_report(name, info, summary.events, points, front))
    return front
