"""Size, speed and quality of a model: parameters, FLOPs, CPU latency, validation/test metric."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netsize.data import Splits
from netsize.model import count_flops, count_params
from netsize.train import evaluate

NOISY = 1.5  # a latency whose repeats spread more than this (max / min) is marked noisy


@dataclass(frozen=True)
class Latency:
    ms: float  # median over the rounds of each round's median forward time
    spread: float  # max / min of the rounds' medians (1.0: every round agreed)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY


@torch.inference_mode()
def latencies(models: Sequence[nn.Module], input_shape: tuple[int, ...], batch: int,
              rounds: int = 5, repeats: int = 20, warmup: int = 5) -> list[Latency]:
    """CPU forward time of each model at `batch`, measured as a benchmark should be: every model
    warmed up, then `rounds` rounds in which each model (in alternating order, so that a
    change of machine load falls on all of them) runs `repeats` times and keeps its median."""
    x = torch.randn(batch, *input_shape)
    for model in models:
        model.eval()
        for _ in range(warmup):
            model(x)
    medians: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    for r in range(rounds):
        for i in order if r % 2 == 0 else reversed(order):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                models[i](x)
                times.append((time.perf_counter() - started) * 1e3)
            medians[i].append(statistics.median(times))
    return [Latency(statistics.median(m), max(m) / max(min(m), 1e-9)) for m in medians]


def latency_columns(models: Sequence[nn.Module], input_shape: tuple[int, ...],
                    batches: tuple[int, ...] = (1, 64)) -> list[dict[str, float]]:
    """latency_b<N>_ms for each batch and latency_spread (the larger spread) of each model,
    measured together on CPU copies."""
    cpu = [copy.deepcopy(m).cpu() for m in models]
    rows: list[dict[str, float]] = [{} for _ in models]
    for batch in batches:
        for row, lat in zip(rows, latencies(cpu, input_shape, batch), strict=True):
            row[f"latency_b{batch}_ms"] = lat.ms
            row["latency_spread"] = max(row.get("latency_spread", 1.0), lat.spread)
    return rows


def size_row(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """params and FLOPs per example."""
    return {"params": count_params(model), "flops": count_flops(model, input_shape)}


def measure(net: nn.Module, splits: Splits, device: torch.device) -> dict[str, Any]:
    """Validation and test metric, parameters and FLOPs (latency: latency_columns, which
    times all the models of a table together)."""
    s = splits.to(device)
    _, val = evaluate(net, s.x_val, s.y_val, s.task)
    _, test = evaluate(net, s.x_test, s.y_test, s.task)
    return {"val_metric": val, "test_metric": test,
            **size_row(copy.deepcopy(net).cpu(), splits.input_shape)}
