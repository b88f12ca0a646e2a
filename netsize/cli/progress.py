"""Rich progress bars for the commands (tables are in netsize.cli.tables)."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from netsize.cli.common import console
from netsize.runs.study import StudyProgress
from netsize.train import Checkpoint


def bar(console_: Any = console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console_)


class TrainingBar:
    """A `Reporter` that draws training progress and prints one line per growth event.

    The bar counts optimizer steps; its text names the epoch in progress out of the run's
    `epochs` and the last finished epoch's validation metric and size. A later start is a
    finishing run (grow.finish_epochs) on the same data: its own bar, its own epoch count."""

    def __init__(self, progress: Progress, epochs: int):
        self.progress, self.epochs, self.last = progress, epochs, ""
        self.task_id: TaskID | None = None
        self.current = 0  # the epoch in progress (1-based); 0 before the first step
        self.steps_per_epoch = 0.0  # from the first start: the run's steps over its epochs

    def start(self, total_steps: int) -> None:
        first = self.task_id is None
        if first:
            self.steps_per_epoch = total_steps / max(self.epochs, 1)
        else:
            self.epochs = max(1, round(total_steps / max(self.steps_per_epoch, 1e-9)))
        self.current, self.last = 0, ""
        self.task_id = self.progress.add_task("training" if first else "finishing",
                                              total=total_steps, info="")

    def step(self, step: int, epoch: int) -> None:
        self.current = epoch
        self.progress.update(self.task_id, completed=step, info=self.info())  # type: ignore

    def info(self) -> str:
        return f"epoch {self.current}/{self.epochs}" + (f" {self.last}" if self.last else "")

    def epoch(self, record: dict[str, Any]) -> None:
        self.current = record["epoch"]
        self.last = f"val {record['val_metric']:.4f} {record['params']:,} params"
        self.progress.update(self.task_id, info=self.info())  # type: ignore[arg-type]

    def event(self, record: dict[str, Any]) -> None:
        depth = "residual block" if record.get("init") == "residual block" else "residual branch"
        change = (f"{record['layer']} +{record['units']} units" if record["kind"] == "width"
                  else f"a {record['units']}-channel {depth} after {record['layer']}")
        self.progress.console.print(
            f"[green]grow[/] step {record['step']}: {change} -> {record['architecture']} "
            f"({record['params_after']:,} params)", highlight=False)

    def checkpoint(self, ckpt: Checkpoint) -> None: ...

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)


class StudyBar:
    def __init__(self, progress: Progress, wanted: int):
        self.progress = progress
        self.task_id = progress.add_task("trials", total=wanted, info="")

    def __call__(self, state: StudyProgress) -> None:
        self.progress.update(self.task_id, completed=state.completed,
                             info=f"front {state.front_size} points, best val "
                                  f"{state.best_val:.4f}")
