"""The grow section of a recipe: when growth is considered (SENN checks or GradMax's fixed
schedule), which candidates are scored, how new units start, and the caps on size.

Each cadence (check interval, cooldown, schedule start and interval) is given in steps or in
epochs, the unit named by the key (grow.check_every or grow.check_every_epochs); `in_steps`
turns epochs into steps once the run's steps per epoch are known.

The decisions and moves themselves are netsize.graph.grow (through netsize.networks.GraphMoves
and netsize.grower.Grower); this module holds only their configuration.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from netsize.config import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_LAYERS,
    MAX_PARAMS,
    MAX_STEPS,
    MAX_WIDTH,
    Strict,
)

# Each cadence key in steps; its twin in epochs is the same name + "_epochs" (fractions allowed).
CADENCE_KEYS = ("grow.check_every", "grow.cooldown", "grow.schedule.start",
                "grow.schedule.every")
# either key of a pair -> the other one
TWINS = {**{k: f"{k}_epochs" for k in CADENCE_KEYS}, **{f"{k}_epochs": k for k in CADENCE_KEYS}}


def _one_unit(data: Any, section: str, names: tuple[str, ...]) -> Any:
    """Before validation: a cadence is given in steps or in epochs, never both. "Given" means
    present in the input and not null (the step keys' defaults do not count); an epoch key given
    alone clears its step key (null: from epochs), so the recorded recipe says which one ran."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name in names:
        steps, epochs = f"{section}.{name}", f"{section}.{name}_epochs"
        if data.get(f"{name}_epochs") is None:
            if name in data and data[name] is None:
                raise ValueError(f"{steps} is null; give a number of steps, or {epochs}")
        elif data.get(name) is not None:
            raise ValueError(f"{steps} and {epochs} both set one cadence (in steps and in "
                             "epochs); keep one of the two")
        else:
            data[name] = None
    return data


class ScheduleConfig(Strict):
    """GradMax's fixed schedule: widen every growable group at steps start, start+every, ..."""

    start: int | None = Field(10_000, ge=0, le=MAX_STEPS)
    every: int | None = Field(2_500, ge=1, le=MAX_STEPS)
    start_epochs: float | None = Field(None, ge=0.0, le=MAX_EPOCHS)  # instead of start
    every_epochs: float | None = Field(None, gt=0.0, le=MAX_EPOCHS)  # instead of every
    times: int = Field(12, ge=1, le=MAX_LAYERS)
    # fraction of each group's initial units added each time, at least 1 unit
    amount: float = Field(0.25, gt=0.0, le=64.0)

    @model_validator(mode="before")
    @classmethod
    def _steps_or_epochs(cls, data: Any) -> Any:
        return _one_unit(data, "grow.schedule", ("start", "every"))


class GrowConfig(Strict):
    trigger: Literal["none", "senn", "schedule"] = "senn"
    init: Literal["gradmax", "random", "zero_out"] = "gradmax"
    candidates: list[Literal["width", "depth"]] = ["width", "depth"]
    tau: float = Field(2.0, ge=1.0, le=1e12)  # accept if eta_expanded / eta_current > tau
    # absolute gain threshold (SENN), relative to |dL/dy|^2
    alpha: float = Field(0.0, ge=0.0, le=1e12)
    lambda_n: float = Field(0.0, ge=0.0, le=1e12)  # size penalty exp(-lambda_n * added_params^2)
    damping: float = Field(1e-3, gt=0.0, le=1e12)  # added to the diagonal Fisher
    check_every: int | None = Field(50, ge=1, le=MAX_STEPS)  # steps between checks
    cooldown: int | None = Field(100, ge=0, le=MAX_STEPS)  # steps without checks after growth
    check_every_epochs: float | None = Field(None, gt=0.0, le=MAX_EPOCHS)  # or in epochs
    cooldown_epochs: float | None = Field(None, ge=0.0, le=MAX_EPOCHS)
    increment: int = Field(4, ge=1, le=MAX_WIDTH)  # units added by one width expansion
    fanout_scale: float = Field(0.5, gt=0.0, le=1e3)  # new fan-out column norm / mean existing norm
    score_batch: int = Field(256, ge=2, le=MAX_BATCH)  # training examples used per check
    max_width: int = Field(256, ge=1, le=MAX_WIDTH)
    # conv (not depthwise) and linear ops, the output op excepted: no depth growth past it
    max_layers: int = Field(8, ge=1, le=MAX_LAYERS)
    max_params: int = Field(10_000_000, ge=1, le=MAX_PARAMS)
    max_events: int = Field(50, ge=0, le=MAX_STEPS)  # senn only: a schedule makes all its steps
    schedule: ScheduleConfig = ScheduleConfig()
    # also grow channels tied by residual additions (a stage's residual
    # stream, every producer of the sum together); off: only free groups (block inner widths)
    coupled: bool = False
    # depth growth inserts a zero-initialised residual branch of one conv (branch) or a basic
    # residual block of two (block) after a block's output; auto: block for timm / torchvision
    # models, branch for netsize's own networks
    depth_kind: Literal["auto", "branch", "block"] = "auto"
    # SENN's rule: after an expansion, check again at once (same batch) until no candidate
    # passes; off: SECNN's one expansion per check
    repeat: bool = False
    # train each size the run passed through (every growth event's checkpoint) this many
    # epochs more at that size, from its weights; 0: off (netsize.finish)
    finish_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)

    @model_validator(mode="before")
    @classmethod
    def _steps_or_epochs(cls, data: Any) -> Any:
        return _one_unit(data, "grow", ("check_every", "cooldown"))


def _steps(epochs: float, steps_per_epoch: int, least: int) -> int:
    """The nearest step count (halves round up), at least `least`. Rounded to 6 decimals
    first, so that 1.15 epochs of 10 steps is 11.5 (not 11.4999...) and gives 12."""
    return max(least, math.floor(round(epochs * steps_per_epoch, 6) + 0.5))


def in_steps(cfg: GrowConfig, steps_per_epoch: int) -> GrowConfig:
    """cfg with every cadence in steps (epoch keys converted, then cleared): the config the
    Grower runs on. Intervals are at least 1 step; a cooldown or a start may be 0."""
    def pick(section: Any, name: str, least: int) -> int:
        epochs = getattr(section, f"{name}_epochs")
        if epochs is None:
            return int(getattr(section, name))
        return _steps(epochs, steps_per_epoch, least)

    s = cfg.schedule
    schedule = s.model_copy(update={"start": pick(s, "start", 0), "every": pick(s, "every", 1),
                                    "start_epochs": None, "every_epochs": None})
    return cfg.model_copy(update={
        "check_every": pick(cfg, "check_every", 1), "cooldown": pick(cfg, "cooldown", 0),
        "check_every_epochs": None, "cooldown_epochs": None, "schedule": schedule})


def _value(cfg: GrowConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split(".")[1:]:
        node = getattr(node, part)
    return node


def _read_by_trigger(cfg: GrowConfig) -> list[str]:
    """The cadence keys the trigger reads: the schedule's, or SENN's check and cooldown."""
    schedule = cfg.trigger == "schedule"
    return [k for k in CADENCE_KEYS if k.startswith("grow.schedule.") == schedule]


def cadence(steps: GrowConfig) -> dict[str, int]:
    """The cadence the trigger runs on, in steps ({"grow.check_every": 12, ...}), for the run's
    summary; `steps` is an `in_steps` config."""
    return {k: int(_value(steps, k)) for k in _read_by_trigger(steps)}


def describe_cadence(given: GrowConfig, steps: GrowConfig) -> str:
    """'grow.check_every_epochs 0.5 = 12 steps, grow.cooldown 100 steps': each cadence key the
    trigger reads, named as the recipe gave it, with the steps the run used (`steps` is
    `in_steps(given, ...)`)."""
    parts = []
    for key, value in cadence(steps).items():
        epochs = _value(given, TWINS[key])
        parts.append(f"{key} {value} steps" if epochs is None
                     else f"{TWINS[key]} {epochs:g} = {value} steps")
    return ", ".join(parts)


def uses_epochs(cfg: GrowConfig) -> bool:
    """Whether the trigger reads a cadence given in epochs."""
    return any(_value(cfg, TWINS[k]) is not None for k in _read_by_trigger(cfg))
