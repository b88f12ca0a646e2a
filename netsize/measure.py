"""Size, speed and quality of a model: parameters, FLOPs, CPU latency, validation/test metric."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import nn

from netsize.data import Splits
from netsize.model import count_flops, count_params
from netsize.train import evaluate


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


def measure(net: nn.Module, splits: Splits, device: torch.device) -> dict[str, Any]:
    """Validation and test metric, parameters, FLOPs and CPU latency at batch 1 and 64."""
    s = splits.to(device)
    _, val = evaluate(net, s.x_val, s.y_val, s.task)
    _, test = evaluate(net, s.x_test, s.y_test, s.task)
    cpu = copy.deepcopy(net).cpu()
    return {"val_metric": val, "test_metric": test, **size_row(cpu, splits.input_shape)}
