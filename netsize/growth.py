"""The grow section of a recipe: when growth is considered (SENN checks or GradMax's fixed
schedule), which candidates are scored, how new units start, and the caps on size.

The decisions and moves themselves are netsize.graph.grow (through netsize.networks.GraphMoves
and netsize.grower.Grower); this module holds only their configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netsize.config import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_LAYERS,
    MAX_PARAMS,
    MAX_STEPS,
    MAX_WIDTH,
    Strict,
)


class ScheduleConfig(Strict):
    """GradMax's fixed schedule: widen every growable group at steps start, start+every, ..."""

    start: int = Field(10_000, ge=0, le=MAX_STEPS)
    every: int = Field(2_500, ge=1, le=MAX_STEPS)
    times: int = Field(12, ge=1, le=MAX_LAYERS)
    # fraction of each group's initial units added each time, at least 1 unit
    amount: float = Field(0.25, gt=0.0, le=64.0)


class GrowConfig(Strict):
    trigger: Literal["none", "senn", "schedule"] = "senn"
    init: Literal["gradmax", "random", "zero_out"] = "gradmax"
    candidates: list[Literal["width", "depth"]] = ["width", "depth"]
    tau: float = Field(2.0, ge=1.0, le=1e12)  # accept if eta_expanded / eta_current > tau
    # absolute gain threshold (SENN), relative to |dL/dy|^2
    alpha: float = Field(0.0, ge=0.0, le=1e12)
    lambda_n: float = Field(0.0, ge=0.0, le=1e12)  # size penalty exp(-lambda_n * added_params^2)
    damping: float = Field(1e-3, gt=0.0, le=1e12)  # added to the diagonal Fisher
    check_every: int = Field(50, ge=1, le=MAX_STEPS)  # steps between checks
    cooldown: int = Field(100, ge=0, le=MAX_STEPS)  # steps without checks after an expansion
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
