"""Size and speed of a model: parameters, FLOPs, CPU latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from netsize.model import count_flops, count_params


@torch.inference_mode()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int,
               repeats: int = 50, warmup: int = 10) -> float:
    """Median wall time of one forward pass on the CPU, in milliseconds (after a warm-up)."""
    model = model.eval()
    x = torch.randn(batch, *input_shape)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def size_row(model: nn.Module, input_shape: tuple[int, ...],
             batches: tuple[int, ...] = (1, 64)) -> dict[str, float]:
    """params, FLOPs per example and CPU latency (ms) at each batch size, of a CPU model."""
    row: dict[str, float] = {"params": count_params(model),
                             "flops": count_flops(model, input_shape)}
    for batch in batches:
        row[f"latency_b{batch}_ms"] = latency_ms(model, input_shape, batch)
    return row
