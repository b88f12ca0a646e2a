"""Rich progress bars and tables for the commands (the only place that draws)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from netsize.cli.common import console
from netsize.compare import MethodSummary
from netsize.report import Point
from netsize.runs.compare_report import summary_rows
from netsize.runs.study import StudyProgress
from netsize.train import Checkpoint


def bar(console_: Any = console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console_)


class TrainingBar:
    """A `Reporter` that draws training progress and prints one line per growth event."""

    def __init__(self, progress: Progress):
        self.progress, self.last = progress, ""
        self.task_id: TaskID | None = None

    def start(self, total_steps: int) -> None:
        self.task_id = self.progress.add_task("training", total=total_steps, info="")

    def step(self, step: int, epoch: int) -> None:
        self.progress.update(self.task_id, completed=step, info=self.last)  # type: ignore[arg-type]

    def epoch(self, record: dict[str, Any]) -> None:
        self.last = (f"epoch {record['epoch']} val {record['val_metric']:.4f} "
                     f"{record['params']:,} params")

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


def front_table(front: list[Point], caption: str, title: str) -> Table:
    table = Table(title=title, caption=caption)
    trial = bool(front) and "trial" in front[0]
    headers = (["trial"] if trial else []) + ["checkpoint", "step", "parameters", "validation",
                                              "test"]
    for header in headers:
        table.add_column(header, justify="left" if header == "checkpoint" else "right")
    for r in front:
        cells = [str(r["trial"])] if trial else []
        cells += [r["tag"], str(r.get("step", "")), f"{r['params']:,}",
                  f"{r['val_metric']:.4f}", f"{r['test_metric']:.4f}"]
        table.add_row(*cells)
    return table


def prune_table(rows: list[Point], run_dir: Path) -> Table:
    table = Table(title="original / pruned+transfer / from-scratch",
                  caption=f"outputs in {run_dir}")
    table.add_column("variant", no_wrap=True)
    for header in ("eps", "params", "FLOPs", "ms b1", "ms b64", "val", "test"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["variant"], str(r["epsilon"]), f"{r['params']:,}", f"{r['flops']:,}",
                      f"{r['latency_b1_ms']:.3f}", f"{r['latency_b64_ms']:.3f}",  # type: ignore
                      f"{r['val_metric']:.4f}", f"{r['test_metric']:.4f}")
    return table


def compare_table(summaries: list[MethodSummary], folder: Path) -> Table:
    rows = summary_rows(summaries)
    table = Table(title="netsize compare", caption=f"outputs in {folder}")
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "method" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table
