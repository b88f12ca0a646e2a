"""Cadences in epochs: grow.check_every_epochs, cooldown_epochs and schedule.start_epochs /
every_epochs become steps once (nearest step, halves up, intervals at least 1) and then run
exactly as the same cadence given in steps; the recipe keeps the unit it was given in, the run's
summary says the steps; --set, derive and search spaces go through the same rule (resuming
from the recorded recipe: tests/test_resume.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from netsize.errors import UserError
from netsize.grower import Grower
from netsize.growth import GrowConfig, in_steps
from netsize.networks import GraphMoves
from netsize.recipe import derive, load_recipe
from netsize.runs.grow import run_grow
from netsize.search.space import apply, check_space
from netsize.train import SilentReporter

IRIS = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "mlp_iris.yaml"
GROWS = ["grow.tau=1.0"]  # grows whenever a candidate gains anything: cooldowns matter


def _due(cfg: GrowConfig, steps_per_epoch: int, total: int, last_event: int | None = None):
    grower = Grower(in_steps(cfg, steps_per_epoch), GraphMoves(), total,
                    torch.Generator().manual_seed(0))
    if last_event is not None:
        grower.last_event_step = last_event
    return [s for s in range(1, total + 1) if grower.due(s)]  # the loop asks after each step


@pytest.mark.parametrize("epochs, per_epoch, interval, cooldown", [
    (0.5, 7, 4, 4),     # 3.5 steps: halves round up
    (0.3, 10, 3, 3),
    (1.15, 10, 12, 12),  # 11.5, not 11.4999...: rounded at 6 decimals first
    (2.5, 3, 8, 8),
    (0.01, 7, 1, 0),    # 0.07 steps: an interval is at least 1, a cooldown may be 0
])
def test_epochs_become_the_nearest_step(epochs, per_epoch, interval, cooldown):
    steps = in_steps(GrowConfig(check_every_epochs=epochs, cooldown_epochs=epochs,
                                schedule={"start_epochs": epochs, "every_epochs": epochs}),
                     per_epoch)
    assert (steps.check_every, steps.cooldown) == (interval, cooldown)
    assert (steps.schedule.every, steps.schedule.start) == (interval, cooldown)
    assert steps.check_every_epochs is steps.cooldown_epochs is None
    assert steps.schedule.start_epochs is steps.schedule.every_epochs is None


def test_cooldown_in_epochs_skips_the_checks_inside_it():
    cfg = GrowConfig(check_every_epochs=0.5, cooldown_epochs=1.5)  # 5 and 15 of 10 steps
    assert _due(cfg, 10, 60) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
    assert _due(cfg, 10, 60, last_event=10) == [25, 30, 35, 40, 45, 50, 55]
    assert _due(GrowConfig(check_every_epochs=0.5, cooldown_epochs=0), 10, 60, 10)[:2] == [10, 15]


def test_schedule_in_epochs_grows_at_its_steps(tmp_path: Path):
    assert _due(GrowConfig(trigger="schedule", schedule={
        "start_epochs": 1, "every_epochs": 0.5, "times": 3}), 8, 100) == [8, 12, 16]
    recipe = load_recipe(IRIS, ["grow.trigger=schedule", "grow.schedule.start_epochs=1",
                                "grow.schedule.every_epochs=0.5", "grow.schedule.times=3"])
    result = run_grow(recipe, tmp_path / "run")
    per_epoch = result.info["grow"]["steps_per_epoch"]
    start, every = per_epoch, int(0.5 * per_epoch + 0.5)
    assert {e["step"] for e in result.summary.events} == {start, start + every,
                                                          start + 2 * every}
    assert result.info["grow"]["cadence_steps"] == {"grow.schedule.start": start,
                                                    "grow.schedule.every": every}


class Notes(SilentReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)


def test_one_epoch_gives_the_same_checks_and_events_as_its_steps(tmp_path: Path):
    notes = [Notes(), Notes()]
    by_epochs = run_grow(load_recipe(IRIS, [*GROWS, "grow.check_every_epochs=1",
                                            "grow.cooldown_epochs=1"]), tmp_path / "epochs",
                         observer=notes[0])
    per_epoch = by_epochs.info["grow"]["steps_per_epoch"]
    by_steps = run_grow(load_recipe(IRIS, [*GROWS, f"grow.check_every={per_epoch}",
                                           f"grow.cooldown={per_epoch}"]), tmp_path / "steps",
                        observer=notes[1])
    assert notes[0].lines == [f"growth cadence at {per_epoch} steps per epoch: grow."
                              f"check_every_epochs 1 = {per_epoch} steps, grow.cooldown_epochs "
                              f"1 = {per_epoch} steps"]
    assert notes[1].lines == []  # steps given: nothing to convert, nothing to say
    checks = by_epochs.summary.checks
    assert checks and all(c["step"] % per_epoch == 0 for c in checks)
    assert checks == by_steps.summary.checks
    assert by_epochs.summary.events == by_steps.summary.events
    assert by_epochs.info["grow"] == by_steps.info["grow"]
    # the recorded recipe keeps the unit the user gave; the report names it with its steps
    recorded = (tmp_path / "epochs" / "recipe.yaml").read_text()
    assert "check_every: null" in recorded and "check_every_epochs: 1.0" in recorded
    report = (tmp_path / "epochs" / "report.md").read_text()
    assert f"grow.check_every_epochs 1 = {per_epoch} steps" in report


def test_no_check_due_names_the_key_given(tmp_path: Path):
    result = run_grow(load_recipe(IRIS, ["grow.check_every_epochs=100"]), tmp_path / "run")
    per_epoch = result.info["grow"]["steps_per_epoch"]
    assert not result.summary.checks
    assert f"grow.check_every_epochs 100 = {100 * per_epoch} steps" in \
        result.info["growth_stopped"]


def test_a_set_or_derive_in_one_unit_replaces_the_other():
    recipe = load_recipe(IRIS, ["grow.check_every_epochs=2"])  # the file gives check_every: 4
    assert (recipe.grow.check_every, recipe.grow.check_every_epochs) == (None, 2.0)
    back = derive(recipe, {"grow.check_every": 9})
    assert (back.grow.check_every, back.grow.check_every_epochs) == (9, None)
    assert derive(recipe, {"grow.tau": 3.0}).grow.check_every_epochs == 2.0
    scheduled = derive(load_recipe(IRIS, ["grow.schedule.start_epochs=1"]),
                       {"grow.schedule.start": 5})  # as compare's GradMax arm sets it
    assert (scheduled.grow.schedule.start, scheduled.grow.schedule.start_epochs) == (5, None)
    with pytest.raises(UserError, match="grow.cooldown and grow.cooldown_epochs"):
        derive(recipe, {"grow.cooldown": 3, "grow.cooldown_epochs": 1.0})


def test_a_search_space_may_name_epoch_keys():
    space = "{grow.check_every_epochs: {type: float, low: 0.5, high: 2.0}}"
    recipe = load_recipe(IRIS, [f"search.space={space}"])
    check_space(recipe, "r.yaml")
    trial = apply(recipe, {"grow.check_every_epochs": 0.75}, "trial")
    assert (trial.grow.check_every, trial.grow.check_every_epochs) == (None, 0.75)
    both = load_recipe(IRIS, ["search.space={grow.check_every_epochs: {type: float, low: 0.5, "
                              "high: 2.0}, grow.check_every: {type: int, low: 2, high: 9}}"])
    with pytest.raises(UserError, match="grow.check_every and grow.check_every_epochs"):
        check_space(both, "r.yaml")
