"""benchmarks/cifar_throughput.py: its hand-written SECNN and WRN are netsize's presets, layer for
layer, its hand step does what netsize's step does, and the script runs end to end."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from netsize.graph.build import build_graph
from netsize.graph.presets import secnn, wrn

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their neighbours
    return importlib.import_module("cifar_throughput")


def params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("kind, kw", [("secnn", {"width": 16}), ("secnn", {"width": 8}),
                                      ("wrn", {"depth": 28, "widen": 1, "width_multiplier": .25}),
                                      ("wrn", {"depth": 10, "widen": 2, "width_multiplier": 1.})])
def test_hand_models_are_the_presets_with_their_weights(bench: ModuleType, kind: str,
                                                        kw: dict) -> None:
    preset = build_graph((secnn if kind == "secnn" else wrn)((3, 32, 32), 10, **kw))
    hand = bench.Secnn(**kw) if kind == "secnn" else bench.WideResNet(**kw)
    assert params(hand) == params(preset)
    importlib.import_module("hand_loop").copy_state(preset, hand)  # asserts the same shapes
    preset.eval()
    hand.eval()
    x = torch.randn(3, 3, 32, 32)
    out = hand(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, preset(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", ["secnn", "wrn"])
def test_one_hand_step_moves_the_weights_as_netsize_s_step(bench: ModuleType,
                                                           model: str) -> None:
    args = argparse.Namespace(batch=16, set=["train.epochs=1"])
    trainer = bench.make_trainer(model, torch.device("cpu"), args)
    trainer.net.train()
    hand = bench.HandStep(trainer)
    start = {k: v.clone() for k, v in hand.net.state_dict().items()}
    idx = torch.arange(16)
    for step in (trainer.train_step, hand):
        torch.manual_seed(1)  # the same dropout masks (SECNN) on both sides
        step(idx)
    ours, theirs = hand.net.state_dict(), list(trainer.net.state_dict().values())
    for (name, mine), other in zip(ours.items(), theirs, strict=True):
        torch.testing.assert_close(mine, other, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(ours[next(iter(ours))], start[next(iter(start))])  # a step was taken


def test_bf16_and_channels_last_reach_the_hand_step(bench: ModuleType) -> None:
    sets = ["train.precision=bf16", "train.channels_last=true"]
    trainer = bench.make_trainer("secnn", torch.device("cpu"),
                                 argparse.Namespace(batch=8, set=sets))
    hand = bench.HandStep(trainer)
    loss = hand(torch.arange(8))
    assert hand.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert hand.net.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_main_writes_one_ratio_per_round(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "tp.json"
    assert bench.main(["--device", "cpu", "--steps", "1", "--rounds", "2", "--batch", "8",
                       "--json", str(path)]) == 0
    results = json.loads(path.read_text())["results"]
    assert [(r["model"], r["params"]) for r in results] == [("secnn", 9024), ("wrn", 24490)]
    for r in results:
        assert len(r["ratios"]) == 2
        pairs = zip(r["netsize_per_s"], r["hand_per_s"], strict=True)
        assert r["ratios"] == pytest.approx([a / b for a, b in pairs])


@pytest.mark.parametrize("argv", [["--set", "data.limit=10"], ["--models", "vgg"],
                                  ["--rounds", "0"]])
def test_bad_options_exit_2(bench: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--device", "cpu", *argv])
    assert exc.value.code == 2


def test_a_value_the_recipe_refuses_exits_2(bench: ModuleType, capsys) -> None:
    assert bench.main(["--device", "cpu", "--set", "train.precision=fp8"]) == 2
    assert "train.precision" in capsys.readouterr().err
