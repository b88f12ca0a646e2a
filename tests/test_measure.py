"""Latency measured as a benchmark: warm-up, alternating rounds, median and spread; noisy rows
marked in prune's table; --no-latency leaves the columns out."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from netsize.cli.tables import prune_table
from netsize.measure import NOISY, Latency, latencies, latency_columns


class Logged(nn.Module):
    """Records its name at every forward call; sleeps `seconds` to be slow on purpose."""

    def __init__(self, name: str, log: list[str], seconds: float = 0.0):
        super().__init__()
        self.name, self.log, self.seconds = name, log, seconds
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        if self.seconds:
            time.sleep(self.seconds)
        return self.layer(x)


def test_rounds_alternate_the_models_after_a_warm_up():
    log: list[str] = []
    latencies([Logged("a", log), Logged("b", log)], (3,), 1, rounds=3, repeats=2, warmup=1)
    assert log == ["a", "b", "a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]


def test_median_and_spread_of_the_rounds():
    log: list[str] = []
    fast, slow = Logged("fast", log), Logged("slow", log, seconds=0.002)
    a, b = latencies([fast, slow], (3,), 4, rounds=3, repeats=3, warmup=1)
    assert b.ms > 2.0 > a.ms  # milliseconds
    assert a.spread >= 1.0 and b.spread >= 1.0
    assert Latency(1.0, NOISY + 0.01).noisy and not Latency(1.0, NOISY).noisy


def test_latency_columns_time_copies_at_each_batch():
    rows = latency_columns([nn.Linear(3, 2), nn.Linear(3, 5)], (3,), batches=(1, 8))
    for row in rows:
        assert set(row) == {"latency_b1_ms", "latency_b8_ms", "latency_spread"}
        assert row["latency_b1_ms"] > 0 and row["latency_spread"] >= 1.0


def _row(spread: float | None, ms: float | None) -> dict:
    return {"variant": "original", "epsilon": "", "params": 10, "flops": 20,
            "latency_b1_ms": ms, "latency_b64_ms": ms, "latency_spread": spread,
            "val_metric": 0.5, "test_metric": 0.5}


@pytest.mark.parametrize(("rows", "cell", "caption"), [
    ([_row(1.1, 0.25)], "0.250 ", False),
    ([_row(1.1, 0.25), _row(2.0, 0.5)], "0.500?", True),
    ([_row(None, None)], " - ", False),
])
def test_prune_table_marks_noisy_latency(rows: list, cell: str, caption: bool):
    console = Console(width=200, record=True)
    console.print(prune_table(rows, Path("run")))
    text = console.export_text()
    assert cell in text
    assert ("noisy" in text) == caption
