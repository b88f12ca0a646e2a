"""TensorBoard scalars for a run (`--tensorboard`): where PyTorch users look at training curves.

A `Reporter` that writes, at the run's optimizer step, every epoch's losses, metrics, size and
learning rate, and every growth event's size and score ratio, to RUN_DIR/tensorboard. The
tensorboard package is an optional extra (`pip install 'netsize[tensorboard]'`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netsize.errors import UserError
from netsize.train import Checkpoint, Reporter

EPOCH_SCALARS = {"train/loss": "train_loss", "val/loss": "val_loss", "val/metric": "val_metric",
                 "test/metric": "test_metric", "size/params": "params",
                 "size/flops_per_example": "flops", "train/lr": "lr"}


def _summary_writer(folder: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package; install it with "
                        "pip install 'netsize[tensorboard]', or drop --tensorboard.") from None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def check_available() -> None:
    """The same one-line UserError before training when tensorboard is not installed."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        _summary_writer(Path("."), None)


class Fanout:
    """One Reporter that tells several, in order."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def start(self, total_steps: int) -> None:
        for r in self.reporters:
            r.start(total_steps)

    def step(self, step: int, epoch: int) -> None:
        for r in self.reporters:
            r.step(step, epoch)

    def epoch(self, record: dict[str, Any]) -> None:
        for r in self.reporters:
            r.epoch(record)

    def event(self, record: dict[str, Any]) -> None:
        for r in self.reporters:
            r.event(record)

    def checkpoint(self, ckpt: Checkpoint) -> None:
        for r in self.reporters:
            r.checkpoint(ckpt)

    def note(self, text: str) -> None:
        for r in self.reporters:
            r.note(text)


class TensorBoardLog:
    """Scalars at the optimizer step. A resumed run's first report is the step it resumes at:
    what the killed run logged after that step is purged, so no curve holds a step twice."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writer: Any = None

    def _open(self, resumed_at: int | None) -> Any:
        if self.writer is None:
            self.writer = _summary_writer(self.folder, resumed_at)
        return self.writer

    def start(self, total_steps: int) -> None: ...

    def note(self, text: str) -> None: ...

    def step(self, step: int, epoch: int) -> None:
        # The loop's first call is step 1 in a new run, the saved step when it resumes.
        self._open(step + 1 if step > 1 else None)

    def epoch(self, record: dict[str, Any]) -> None:
        writer = self._open(None)
        for tag, key in EPOCH_SCALARS.items():
            writer.add_scalar(tag, float(record[key]), record["step"])
        writer.flush()  # an epoch's curve survives a kill

    def event(self, record: dict[str, Any]) -> None:
        writer = self._open(None)
        writer.add_scalar("growth/params_after", record["params_after"], record["step"])
        if record.get("ratio") is not None:
            writer.add_scalar("growth/ratio", float(record["ratio"]), record["step"])

    def checkpoint(self, ckpt: Checkpoint) -> None:
        if ckpt.tag == "final" and self.writer is not None:
            self.writer.close()
            self.writer = None
