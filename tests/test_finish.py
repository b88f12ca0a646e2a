"""grow.finish_epochs: every size a run passed through is trained on at that size from exactly
its checkpoint's weights, and that compute counts in the run's training FLOPs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from netsize.data import load_data
from netsize.finish import SUFFIX, finishing_trainer
from netsize.io import load_checkpoint
from netsize.recipe import load_recipe
from netsize.runs.grow import run_grow

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"
# a schedule grows at steps 4 and 8 whatever training produced: two sizes to finish
GROWS = ["grow.trigger=schedule", "grow.schedule.start=4", "grow.schedule.every=4",
         "grow.schedule.times=2", "train.epochs=2"]


def _examples_per_epoch(n: int, batch: int) -> int:
    return n - 1 if n % batch == 1 else n  # a trailing batch of one example is dropped


def test_finishing_starts_from_the_checkpoint_and_counts_its_flops(tmp_path: Path):
    recipe = load_recipe(TINY / "mlp_iris.yaml", [*GROWS, "grow.finish_epochs=3"])
    result = run_grow(recipe, tmp_path / "run")
    summary, folder = result.summary, tmp_path / "run" / "checkpoints"
    events = [p for p in summary.checkpoints if p["tag"].startswith("event-")
              and not p["tag"].endswith(SUFFIX)]
    finished = {p["tag"]: p for p in summary.checkpoints if p["tag"].endswith(SUFFIX)}
    assert len(events) == 2 and set(finished) == {p["tag"] + SUFFIX for p in events}

    splits = load_data(recipe.data, recipe.seed)
    for point in events:
        saved = load_file(str(folder / point["tag"] / "weights.safetensors"))
        trainer = finishing_trainer(recipe, splits, torch.device("cpu"), folder / point["tag"])
        start = trainer.net.state_dict()
        assert start.keys() == saved.keys()
        assert all(torch.equal(start[k], saved[k]) for k in saved)  # exactly its weights
        assert trainer.total_steps == 3 * trainer.steps_per_epoch and not trainer.grow
        mine = finished[point["tag"] + SUFFIX]
        assert (mine["params"], mine["flops"]) == (point["params"], point["flops"])
        assert (folder / mine["tag"] / "weights.safetensors").is_file()

    n, batch = len(splits.x_train), recipe.train.batch_size
    finishing = sum(3.0 * p["flops"] * _examples_per_epoch(n, batch) * 3 for p in events)
    grown = summary.history[-1]["train_flops"]  # the growth run's own FLOPs
    assert grown > 0 and summary.train_flops == pytest.approx(grown + finishing)
    assert result.info["train_flops"] == pytest.approx(grown + finishing)


def test_finished_weights_stay_at_the_checkpoint_with_a_vanishing_learning_rate(tmp_path):
    """With lr 1e-12, finishing moves no parameter: what it trained is the checkpoint."""
    recipe = load_recipe(TINY / "mlp_iris.yaml", [*GROWS, "grow.finish_epochs=2",
                                                  "train.lr=1.0e-12"])
    summary = run_grow(recipe, tmp_path / "run").summary
    folder = tmp_path / "run" / "checkpoints"
    tags = [p["tag"] for p in summary.checkpoints if p["tag"].startswith("event-")
            and not p["tag"].endswith(SUFFIX)]
    assert len(tags) == 2
    for tag in tags:
        start = dict(load_checkpoint(folder / tag)[0].named_parameters())
        end = dict(load_checkpoint(folder / (tag + SUFFIX))[0].named_parameters())
        for name, value in start.items():
            torch.testing.assert_close(end[name], value, atol=1e-9, rtol=0)


def test_finishing_is_off_by_default(tmp_path: Path):
    result = run_grow(load_recipe(TINY / "mlp_iris.yaml", GROWS), tmp_path / "run")
    assert result.summary.events
    assert not any(p["tag"].endswith(SUFFIX) for p in result.summary.checkpoints)
    assert result.summary.train_flops == result.summary.history[-1]["train_flops"]
