"""benchmarks/growth_overhead.py times a whole grow run: the training loop, then the finishing
of each size; growth's share is of the loop and of the two together, and its parts add up."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_a_finishing_run_is_timed_loop_and_finishing(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("growth_overhead")
    out = tmp_path / "go.json"
    changes = ["train.epochs=3", "grow.tau=1.0", "grow.finish_epochs=1",
               "grow.check_every=4", "grow.cooldown=4", "grow.max_events=2"]
    argv = ["--recipe", str(ROOT / "recipes" / "tiny" / "cnn_digits.yaml"), "--json", str(out)]
    assert bench.main([*argv, *(a for c in changes for a in ("--set", c))]) == 0
    grown, fixed = (json.loads(out.read_text())[k] for k in ("grown", "fixed"))
    assert grown["events"] == grown["finished_sizes"] >= 1  # each event's size is finished
    assert grown["finishing_seconds"] > 0 and fixed["finished_sizes"] == 0
    assert grown["command_seconds"] == pytest.approx(grown["wall_seconds"]
                                                     + grown["finishing_seconds"])
    assert grown["growth_share"] == pytest.approx(grown["growth_seconds"]
                                                  / grown["wall_seconds"])
    assert grown["command_share"] < grown["growth_share"]
    assert grown["checks"] >= grown["events"] and grown["check_seconds"] <= grown["growth_seconds"]
