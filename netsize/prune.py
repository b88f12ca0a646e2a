"""Prune-and-transfer (ODF2NNA) for netsize's own networks: unit statistics, unit scores,
the choice of units to keep, and the transfer into a smaller dense network.

Statistics are measured in eval mode over training examples. A unit is a hidden neuron (mlp) or
a channel (cnn; its statistics run over examples and positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, field_validator

from netsize import scores
from netsize.config import MAX_EPOCHS, MAX_EXAMPLES, MAX_WIDTH, Strict
from netsize.errors import UserError
from netsize.model import Net
from netsize.spec import NetSpec
from netsize.surgery import narrow


class PruneConfig(Strict):
    """Prune-and-transfer (ODF2NNA): drop low-scoring units, copy the rest, fine-tune."""

    criterion: Literal["variability", "cv", "magnitude", "taylor"] = "variability"
    # Units scoring below epsilon * (mean score of their layer, or of all units if global)
    # are removed. A list tries each value and gives a front over them. For timm/torchvision
    # models each value is instead the share of channels removed (0 < epsilon < 1).
    epsilon: list[Annotated[float, Field(ge=0.0, le=1e6)]] = Field([0.5], min_length=1,
                                                                  max_length=1000)
    scope: Literal["layer", "global"] = "layer"
    min_units: int = Field(0, ge=0, le=MAX_WIDTH)  # keep at least this many units per layer
    fold_mean: bool = True  # fold each removed unit's mean activation into the next bias
    finetune_epochs: int = Field(5, ge=0, le=MAX_EPOCHS)
    lr: float | None = Field(None, gt=0.0, le=1e3)  # fine-tuning learning rate (default: train.lr)
    control: bool = True  # also train the pruned architecture from scratch
    # training examples used for unit statistics
    stats_examples: int = Field(2048, ge=1, le=MAX_EXAMPLES)

    @field_validator("epsilon", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value


@dataclass
class UnitStats:
    """Per hidden layer, per unit: (d_i,) tensors."""

    mean: list[torch.Tensor]  # mean activation
    std: list[torch.Tensor]  # standard deviation of the activation
    taylor: list[torch.Tensor]  # |mean_n sum_positions a * dl/da|: first-order loss change


def unit_statistics(net: Net, x: torch.Tensor, y: torch.Tensor, task: str,
                    chunk: int = 512) -> UnitStats:
    n_layers = len(net.spec.layers)
    sums = [torch.zeros(0)] * n_layers
    squares = [torch.zeros(0)] * n_layers
    taylor = [torch.zeros(0)] * n_layers
    count = [0] * n_layers
    for start in range(0, len(x), chunk):
        p = scores.probe(net, x[start : start + chunk], y[start : start + chunk], task)
        for i in range(n_layers):
            a, g = p.a[i].double(), p.grad_a[i].double()
            dims = (0, 2, 3) if a.dim() == 4 else (0,)
            first = start == 0
            sums[i] = a.sum(dims) if first else sums[i] + a.sum(dims)
            squares[i] = a.pow(2).sum(dims) if first else squares[i] + a.pow(2).sum(dims)
            per_example = (a * g).sum((2, 3)) if a.dim() == 4 else a * g  # (n, d)
            contrib = per_example.sum(0)
            taylor[i] = contrib if first else taylor[i] + contrib
            count[i] += a.numel() // a.shape[1]
    means = [s / c for s, c in zip(sums, count, strict=True)]
    stds = [(q / c - m.pow(2)).clamp_min(0).sqrt() for q, c, m in zip(squares, count, means,
                                                                       strict=True)]
    return UnitStats([m.float() for m in means], [s.float() for s in stds],
                     [(t / len(x)).abs().float() for t in taylor])


def unit_scores(net: Net, stats: UnitStats, criterion: str) -> list[torch.Tensor]:
    """Higher = more worth keeping. variability: std; cv: std/|mean|; magnitude: fan-in norm."""
    if criterion == "variability":
        return stats.std
    if criterion == "cv":
        return [s / (m.abs() + 1e-8) for s, m in zip(stats.std, stats.mean, strict=True)]
    if criterion == "taylor":
        return stats.taylor
    if criterion == "magnitude":
        out = []
        for i in range(len(net.spec.layers)):
            op = net.layer(i).op
            assert op.bias is not None
            rows = torch.cat([op.weight.detach().flatten(1), op.bias.detach()[:, None]], dim=1)
            out.append(rows.norm(dim=1))
        return out
    raise ValueError(f"unknown criterion {criterion}")


def select_units(unit_scores: list[torch.Tensor], epsilon: float, scope: str,
                 min_units: int) -> list[torch.Tensor]:
    """Indices kept per layer: units scoring at least epsilon x the mean score of their layer
    (scope layer) or of every unit (scope global); at least min_units, the best ones."""
    pooled = torch.cat(unit_scores).mean()
    keep = []
    for i, s in enumerate(unit_scores):
        threshold = epsilon * (s.mean() if scope == "layer" else pooled)
        kept = (s >= threshold).nonzero().squeeze(1)
        if len(kept) < min_units:
            kept = s.topk(min(min_units, len(s))).indices.sort().values
        if len(kept) == 0:
            raise UserError(f"prune.epsilon {epsilon} removes every unit of hidden layer {i}; "
                            "lower prune.epsilon or set prune.min_units to 1 or more.")
        keep.append(kept.cpu())
    return keep


def prune_and_transfer(net: Net, stats: UnitStats, criterion: str, epsilon: float, scope: str,
                       min_units: int, fold_mean: bool) -> tuple[NetSpec, Net]:
    """The smaller dense network holding the surviving weights (not fine-tuned yet)."""
    keep = select_units(unit_scores(net, stats, criterion), epsilon, scope, min_units)
    spec, small, _ = narrow(net, keep, stats.mean if fold_mean else None)
    return spec, small
