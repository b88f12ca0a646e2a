"""Finishing a grown run's sizes: each size the run passed through, trained on at that size.

A growth event's checkpoint is the network just before it grew: a snapshot taken in the middle
of training, so a small grown network looks worse than a fixed one of its size trained to the
end. With grow.finish_epochs > 0 every such checkpoint is trained for that many epochs at its
fixed size, starting from exactly its weights (a fresh optimizer and schedule over the finishing
epochs, the recipe's train settings); its best validation epoch becomes a checkpoint of its
own (`<tag>-finished`, on the run's front with the others), and its training FLOPs and time
count in the run's compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from netsize.data import Splits
from netsize.io import load_checkpoint
from netsize.train import Checkpoint, Reporter, RunSummary, Trainer, point_of

if TYPE_CHECKING:
    from netsize.recipe import Recipe

SUFFIX = "-finished"


@dataclass
class Finished:
    checkpoint: Checkpoint  # tagged <event tag>-finished
    train_flops: float
    wall_seconds: float


def finishing_trainer(recipe: Recipe, splits: Splits, device: torch.device, folder: Path,
                      reporter: Reporter | None = None) -> Trainer:
    """A fixed-size Trainer for grow.finish_epochs epochs whose network is the checkpoint in
    `folder`, weights as saved."""
    from netsize.recipe import derive  # recipe imports the train config: import at call time

    net, _ = load_checkpoint(folder, device)
    finish = derive(recipe, {"train.epochs": recipe.grow.finish_epochs})
    return Trainer(finish, splits, device, reporter, net=net, grow=False)


def to_finish(summary: RunSummary) -> list[dict[str, Any]]:
    """The growth events' checkpoints: the last network at each size before the final one."""
    return [p for p in summary.checkpoints if p["tag"].startswith("event-")
            and not p["tag"].endswith(SUFFIX)]


def finish_sizes(recipe: Recipe, splits: Splits, device: torch.device, run_dir: Path,
                 summary: RunSummary, observer: Reporter | None = None) -> Iterator[Finished]:
    """Finish every event checkpoint saved under run_dir/checkpoints, one after another; the
    best validation epoch of each is its finished checkpoint. observer sees the training."""
    for point in to_finish(summary):
        trainer = finishing_trainer(recipe, splits, device,
                                    run_dir / "checkpoints" / point["tag"], observer)
        done = trainer.fit()
        best = trainer.best
        assert best is not None  # fit ran at least one epoch
        ckpt = best[1]
        ckpt.tag, ckpt.step, ckpt.epoch = point["tag"] + SUFFIX, point["step"], point["epoch"]
        yield Finished(ckpt, done.train_flops, done.wall_seconds)


def add_finished(summary: RunSummary, finished: Finished, reporter: Reporter) -> None:
    """Count a finished size's compute in the run and record its checkpoint."""
    summary.train_flops += finished.train_flops
    summary.wall_seconds += finished.wall_seconds
    summary.checkpoints.append(point_of(finished.checkpoint))
    reporter.checkpoint(finished.checkpoint)
