"""The training loop: determinism on the CPU and growth that keeps training working."""

from __future__ import annotations

from pathlib import Path

import torch

from netsize.data import load_data
from netsize.recipe import load_recipe
from netsize.train import Trainer

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"


def _run(name: str, *overrides: str):
    recipe = load_recipe(TINY / name, list(overrides))
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    return trainer, trainer.fit()


def _strip_times(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_same_seed_same_events_and_metrics():
    _, first = _run("cnn_digits.yaml")
    _, second = _run("cnn_digits.yaml")
    assert first.events and first.events == second.events
    assert _strip_times(first.history) == _strip_times(second.history)


def test_other_seed_changes_the_run():
    _, first = _run("mlp_iris.yaml")
    _, other = _run("mlp_iris.yaml", "seed=1")
    assert _strip_times(first.history) != _strip_times(other.history)


def test_schedule_trigger_follows_the_schedule():
    trainer, summary = _run("teacher_student.yaml")
    assert [e["step"] for e in summary.events] == [10, 20, 30]
    assert trainer.net.spec.widths() == [8]  # 5 + 3 x ceil(0.2 * 5)
    assert all(e["init"] == "gradmax" for e in summary.events)


def test_growth_events_add_parameters_and_training_goes_on():
    trainer, summary = _run("mlp_iris.yaml")
    assert summary.events
    assert summary.history[-1]["params"] > trainer.initial_params
    assert all(e["params_after"] > e["params_before"] for e in summary.events)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in summary.history)
