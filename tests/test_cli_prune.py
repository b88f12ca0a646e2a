"""netsize train + netsize prune end to end on a tiny recipe, and prune's bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsize.cli import app
from netsize.data import load_data
from netsize.io import load_checkpoint
from netsize.prune import NATIVE_EPSILONS, PruneConfig
from netsize.recipe import load_recipe
from netsize.train import evaluate

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "wine"
    result = runner.invoke(app, ["train", str(TINY / "prune_mlp.yaml"), "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    best = out / "checkpoints" / "best"
    _make_constant_units(best, count=3)
    return best


def _make_constant_units(folder: Path, count: int) -> None:
    """Zero the fan-in of `count` units of every hidden layer: their activation is constant, so
    pruning removes them at any epsilon > 0 whatever training produced."""
    import torch

    from netsize.io import save_checkpoint

    net, meta = load_checkpoint(folder)
    hidden = [n.name for n in net.spec.nodes if n.op == "linear" and n.name != net.spec.output]
    with torch.no_grad():
        for name in hidden:
            layer = net.ops[name]
            layer.weight[:count] = 0.0
            layer.bias[:count] = 0.0
    save_checkpoint(folder, net.spec, net.state_dict(), {k: v for k, v in meta.items()
                                                         if k != "spec"})


@pytest.fixture(scope="module")
def pruned(trained: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prune") / "run"
    result = runner.invoke(app, ["prune", str(trained), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def test_train_ignores_growth(trained: Path):
    meta = json.loads((trained / "spec.json").read_text())
    assert meta["events"] == [] and meta["recipe"]["grow"]["trigger"] == "none"


def test_prune_writes_every_output(pruned: Path):
    for name in ("recipe.yaml", "results.csv", "results.json", "front.csv", "front.json",
                 "front.png", "report.md"):
        assert (pruned / name).is_file(), name
    rows = json.loads((pruned / "results.json").read_text())
    variants = [(r["variant"], r["epsilon"]) for r in rows]
    assert variants == [("original", ""), ("pruned+transfer", 0.5), ("from-scratch", 0.5),
                        ("pruned+transfer", 1.0), ("from-scratch", 1.0)]
    original = rows[0]
    for row in rows[1:]:
        assert row["params"] < original["params"] and row["flops"] < original["flops"]
        assert row["latency_b1_ms"] > 0 and row["latency_b64_ms"] > 0
        assert row["latency_spread"] >= 1.0
    pairs = {(r["epsilon"], r["variant"]): r["params"] for r in rows[1:]}
    assert pairs[(0.5, "pruned+transfer")] == pairs[(0.5, "from-scratch")]


def test_pruned_checkpoints_reload_exactly(pruned: Path):
    recipe = load_recipe(pruned / "recipe.yaml")
    splits = load_data(recipe.data, recipe.seed)
    rows = {r["path"]: r for r in json.loads((pruned / "results.json").read_text()) if r["path"]}
    assert len(rows) == 4
    for path, row in rows.items():
        net, meta = load_checkpoint(pruned / path)
        assert sum(p.numel() for p in net.parameters()) == row["params"] == meta["params"]
        _, val = evaluate(net, splits.x_val, splits.y_val, splits.task)
        assert val == pytest.approx(row["val_metric"], abs=1e-6)


def test_no_latency_leaves_the_columns_out(trained: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["prune", str(trained), "--out", str(out), "--device", "cpu",
                                 "--no-latency", "--epsilon", "0.5", "--set",
                                 "prune.control=false", "--set", "prune.finetune_epochs=1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert [r["latency_b1_ms"] for r in rows] == [None, None]
    assert "Latency left out" in (out / "report.md").read_text()


@pytest.mark.parametrize("case", ["missing", "no_spec", "native_recipe", "all_units", "bad_key"])
def test_prune_bad_input_exits_2(case: str, trained: Path, tmp_path: Path):
    args = {
        "missing": [str(tmp_path / "nowhere")],
        "no_spec": [str(tmp_path)],
        "native_recipe": [str(TINY / "prune_mlp.yaml")],
        "all_units": [str(trained), "--epsilon", "100", "--set", "prune.min_units=0"],
        "bad_key": [str(trained), "--set", "prune.criterion=entropy"],
    }[case]
    needle = {"missing": "nowhere", "no_spec": "spec.json", "native_recipe": "netsize train",
              "all_units": "every unit", "bad_key": "prune.criterion"}[case]
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (out / "checkpoints").exists()


def _timm_recipe(folder: Path, weights: Path) -> Path:
    path = folder / "resnet.yaml"
    path.write_text(
        "data: {source: sklearn, name: digits, as_image: true}\n"
        f"model: {{kind: timm, name: resnet18, weights: '{weights}'}}\n"
        "train: {epochs: 1, batch_size: 128, optimizer: sgd, lr: 0.01}\n"
        "prune: {criterion: variability, epsilon: [0.5], finetune_epochs: 1, control: false,\n"
        "        stats_examples: 64}\n")
    return path


def test_prune_a_timm_model_from_a_recipe(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from netsize import foreign
    from netsize.recipe import ForeignModelConfig

    torch.manual_seed(0)
    cfg = ForeignModelConfig(kind="timm", name="resnet18")
    model = foreign.create_model(cfg, (1, 8, 8), 10)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "run"
    result = runner.invoke(app, ["prune", str(_timm_recipe(tmp_path, weights)), "--out", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["original", "pruned+transfer"]
    assert rows[1]["params"] < 0.6 * rows[0]["params"]
    reloaded, meta = foreign.load_pruned(out / rows[1]["path"])
    assert sum(p.numel() for p in reloaded.parameters()) == rows[1]["params"]
    assert reloaded(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_prune_refuses_a_pickle_that_runs_code(tmp_path: Path):
    import os
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    weights = tmp_path / "evil.pt"
    weights.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    out = tmp_path / "run"
    result = runner.invoke(app, ["prune", str(_timm_recipe(tmp_path, weights)), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "evil.pt" in result.output and not marker.exists()


def test_default_epsilons_and_min_units(trained: Path, tmp_path: Path):
    """Without prune.epsilon: the measured defaults for netsize's networks (the claimed regime,
    epsilon 1.0-1.05, included), shares of channels for timm/torchvision; a group never
    vanishes by default, even at an epsilon far above every unit's score."""
    cfg = PruneConfig()
    assert cfg.epsilon is None and cfg.epsilons() == NATIVE_EPSILONS
    assert {1.0, 1.05} <= set(cfg.epsilons()) and cfg.min_units == 1
    assert all(0.0 < e < 1.0 for e in cfg.epsilons(foreign=True))
    assert PruneConfig(epsilon=[0.3]).epsilons(foreign=True) == [0.3]
    result = runner.invoke(app, ["prune", str(trained), "--epsilon", "100", "--set",
                                 "prune.control=false", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
