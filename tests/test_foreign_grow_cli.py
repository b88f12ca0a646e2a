"""End to end through the command line: `netsize grow` of timm's resnet18 at width multiplier
0.25 on files in the CIFAR-10 format, then `netsize prune` of its best checkpoint.

recipes/tiny/timm_resnet18_cifar.yaml uses tau 1 (any candidate adding score passes) and
max_events 2 with checks at steps 3 and 6 of 8, so the run grows twice whatever the training
reached."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_data import write_cifar10
from typer.testing import CliRunner

from netsize.cli import app
from netsize.graph.build import GraphNet
from netsize.io import load_checkpoint

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "tiny" / "timm_resnet18_cifar.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root / "data", per_batch=16)
    out = root / "run"
    result = runner.invoke(app, ["grow", str(RECIPE), "--set", f"data.root={root / 'data'}",
                                 "--out", str(out), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_grow_names_what_it_leaves_alone_then_grows_twice(grown: tuple[Path, str]):
    run, output = grown
    text = " ".join(output.split())
    assert "12 growable groups; left alone: fc" in text
    assert text.index("left alone") < text.index("grow step")  # one line at the start
    events = json.loads((run / "events.json").read_text())
    assert len(events) == 2 and all(e["params_after"] > e["params_before"] for e in events)


def test_grown_checkpoints_load_through_load_checkpoint(grown: tuple[Path, str]):
    run, _ = grown
    net, meta = load_checkpoint(run / "checkpoints" / "final")
    assert isinstance(net, GraphNet) and meta["recipe"]["model"]["kind"] == "timm"
    assert meta["params"] == sum(p.numel() for p in net.parameters())
    assert meta["params"] == json.loads((run / "events.json").read_text())[-1]["params_after"]


def test_prune_of_the_grown_best_checkpoint(grown: tuple[Path, str], tmp_path: Path):
    run, _ = grown
    result = runner.invoke(app, ["prune", str(run / "checkpoints" / "best"), "--out",
                                 str(tmp_path / "prune"), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "prune" / "results.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert int(rows["pruned+transfer"]["params"]) < int(rows["original"]["params"])
    pruned, _ = load_checkpoint(tmp_path / "prune" / rows["pruned+transfer"]["path"])
    assert sum(p.numel() for p in pruned.parameters()) == int(rows["pruned+transfer"]["params"])
