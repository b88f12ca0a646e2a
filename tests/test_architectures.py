"""The architecture vocabulary end to end: SECNN's CIFAR-10 recipe starts at SECNN's size and
grows with SECNN's moves, every tiny architecture recipe grows and its checkpoints reload to
their recorded metric, and today's stage CNN keeps its layer-list form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from graphs import as_layer_list_state, layer_list_net
from safetensors.torch import load_file
from test_data import write_cifar10

from netsize import load_checkpoint, load_recipe, run_grow
from netsize.data import load_data
from netsize.graph.spec import GraphSpec
from netsize.io import save_checkpoint
from netsize.networks import layer_list_as_graph
from netsize.spec import LayerSpec, NetSpec
from netsize.train import evaluate

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def test_cifar10_recipe_starts_at_secnn_size_and_grows_with_its_moves(tmp_path: Path):
    write_cifar10(tmp_path / "data", per_batch=40)
    recipe = load_recipe(RECIPES / "cifar10.yaml", [
        f"data.root={tmp_path / 'data'}", "train.epochs=2", "train.batch_size=32",
        "grow.tau=1.0", "grow.check_every=2", "grow.cooldown=0", "grow.score_batch=32"])
    result = run_grow(recipe, tmp_path / "run", name="cifar10")
    assert result.info["start_params"] == 9_024
    events = result.summary.events
    assert events, result.info["growth_stopped"]
    for event in events:  # SECNN's moves: 4 more channels in one conv, or a 16-channel branch
        added = event["params_after"] - event["params_before"]
        if event["kind"] == "depth":
            channels = event["units"]
            assert added == channels * channels * 9 + 2 * channels  # 2,336 at 16 channels
        else:
            assert event["units"] == 4
    first_depth = [e for e in events if e["kind"] == "depth" and e["units"] == 16]
    assert all(e["params_after"] - e["params_before"] == 2_336 for e in first_depth)


@pytest.mark.parametrize("name", ["secnn_digits", "wrn_digits", "vgg_digits", "fashion_mnist"])
def test_tiny_architecture_recipes_grow_and_reload(name: str, tmp_path: Path):
    if name == "fashion_mnist" and not FASHION.is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    # tau 1: any positive gain passes, so growth happens whatever training produced
    recipe = load_recipe(RECIPES / "tiny" / f"{name}.yaml", ["grow.tau=1.0"])
    result = run_grow(recipe, tmp_path)
    assert result.summary.events
    splits = load_data(recipe.data, recipe.seed)
    for folder in (tmp_path / "checkpoints").iterdir():
        net, meta = load_checkpoint(folder)
        assert isinstance(net.spec, GraphSpec)
        _, val = evaluate(net, splits.x_val, splits.y_val, splits.task)
        assert val == pytest.approx(meta["val_metric"], abs=1e-6)
    assert json.loads((tmp_path / "summary.json").read_text())["events"] == len(
        result.summary.events)


def _layer_list_forward(spec: NetSpec, state: dict[str, torch.Tensor],
                        x: torch.Tensor) -> torch.Tensor:
    """netsize 0.1's layer-list network in eval mode, written out from the old tensor names:
    op -> [batch norm] -> activation per hidden layer (dropout is the identity in eval mode);
    a cnn pools 2x2 (max) between stages and averages over positions after the last layer."""
    act = {"relu": F.relu, "leaky_relu": F.leaky_relu, "gelu": F.gelu,
           "tanh": torch.tanh}[spec.activation]
    h = x.flatten(1) if spec.kind == "mlp" else x
    for i, layer in enumerate(spec.layers):
        w, b = state[f"hidden.{i}.op.weight"], state[f"hidden.{i}.op.bias"]
        h = F.linear(h, w, b) if spec.kind == "mlp" else \
            F.conv2d(h, w, b, padding=spec.kernel_size // 2)
        if layer.norm:
            n = f"hidden.{i}.norm."
            h = F.batch_norm(h, state[n + "running_mean"], state[n + "running_var"],
                             state[n + "weight"], state[n + "bias"], training=False)
        h = act(h)
        if spec.kind == "cnn" and i == len(spec.layers) - 1:
            h = h.mean(dim=(2, 3))
        elif spec.kind == "cnn" and spec.layers[i + 1].stage != layer.stage:
            h = F.max_pool2d(h, 2)
    return F.linear(h, state["head.weight"], state["head.bias"])


def test_layer_list_checkpoints_load_as_the_same_graph(tmp_path: Path):
    """Checkpoints of the layer-list networks (netsize 0.1: a NetSpec and tensors under the old
    names) load as the converted graph holding exactly those tensors, and compute the old
    network's function."""
    specs = [NetSpec("mlp", (6,), 3, (LayerSpec(5, True), LayerSpec(4, False)), "leaky_relu",
                     0.2),
             NetSpec("cnn", (2, 8, 8), 3, (LayerSpec(4, True, 0, False),
                                           LayerSpec(4, False, 0, False),
                                           LayerSpec(5, True, 1, False)), "relu", 0.0, 3)]
    for i, spec in enumerate(specs):
        graph_net = layer_list_net(spec, seed=i)
        graph_net.train()(torch.randn(8, *spec.input_shape))  # move the running statistics
        old_state = as_layer_list_state(spec, graph_net.state_dict())
        new_names = layer_list_as_graph(spec)[1]
        assert "hidden.0.op.weight" in old_state and "head.bias" in old_state
        save_checkpoint(tmp_path / f"ck{i}", spec, old_state, {"tag": "old"})
        assert set(load_file(str(tmp_path / f"ck{i}" / "weights.safetensors"))) == set(old_state)

        net, meta = load_checkpoint(tmp_path / f"ck{i}")
        assert isinstance(net.spec, GraphSpec) and meta["tag"] == "old"
        assert net.spec == layer_list_as_graph(spec)[0]
        loaded = net.state_dict()
        assert set(loaded) == set(new_names.values())
        for old, new in new_names.items():
            assert torch.equal(loaded[new], old_state[old]), old
        x = torch.randn(3, *spec.input_shape)
        with torch.no_grad():
            torch.testing.assert_close(net.eval()(x), _layer_list_forward(spec, old_state, x))
