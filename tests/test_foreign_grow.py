"""Growing timm and torchvision models through the one growth core (netsize.foreign_graph).

Each model is read into the graph vocabulary at width multiplier 0.25, then grown five times
with the moves `netsize grow` makes (GradMax-started inner widths, residual streams with
grow.coupled, a zero-initialised residual block in a stage). After every move: the outputs are
those of the network before in train and eval mode, the Adam moments are carried entry by entry
(new entries zero), and a few Adam steps move every new unit's fan-in. At the end the
checkpoint reloads exactly through netsize.load_checkpoint. Inputs 32x32, batch 4.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netsize import load_checkpoint
from netsize.foreign_graph import foreign_graph
from netsize.graph import grow as graph_grow
from netsize.graph.build import GraphNet
from netsize.io import save_checkpoint
from netsize.recipe import ForeignModelConfig, GrowConfig
from netsize.surgery import IndexMap, carry_optimizer_state

SHAPE, N_CLASSES, BATCH = (3, 32, 32), 10, 4
CFG = GrowConfig(increment=4, coupled=True, depth_kind="block", max_layers=512, max_width=4096,
                 init="gradmax")

# (kind, name, moves): ("width", group) or ("depth", op after which a block goes in)
MODELS = {
    "timm-resnet18": ("timm", "resnet18", [
        ("width", "layer1_0_conv1"), ("width", "layer2_0_conv2"), ("depth", "layer3_0_act2"),
        ("width", "res1_conv1"), ("width", "conv1")]),
    "torchvision-resnet18": ("torchvision", "resnet18", [
        ("width", "layer3_1_conv1"), ("width", "layer2_0_conv2"), ("depth", "layer2_1_relu_1"),
        ("width", "conv1"), ("width", "layer4_0_conv1")]),
    "torchvision-mobilenet_v3_small": ("torchvision", "mobilenet_v3_small", [
        ("width", "features_4_block_0_0"),  # expansion: depthwise conv and SE gate on its path
        ("width", "features_4_block_2_fc1"),  # the SE squeeze width
        ("width", "features_4_block_3_0"),  # a stage's residual stream
        ("depth", "add_2"), ("width", "features_0_0")]),  # the stem (with block 1's SE gate)
    "timm-resnet50": ("timm", "resnet50", [
        ("width", "layer1_0_conv1"), ("width", "layer2_1_conv2"), ("width", "layer3_0_conv3"),
        ("depth", "layer2_3_act3"), ("width", "res1_conv1")]),
}
FAST = [k for k in MODELS if k != "timm-resnet50"]


def _cfg(kind: str, name: str, **kw) -> ForeignModelConfig:
    return ForeignModelConfig(kind=kind, name=name, width_multiplier=0.25, **kw)


def _data(seed: int = 0) -> tuple[Tensor, Tensor, str]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, *SHAPE, generator=gen),
            torch.randint(0, N_CLASSES, (BATCH,), generator=gen), "classification")


def outputs(net: nn.Module, x: Tensor, train: bool) -> Tensor:
    """A forward of a copy (running statistics untouched), dropout drawn from one seed."""
    net = copy.deepcopy(net).train(train)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return net(x)


def adam_steps(net: nn.Module, opt: torch.optim.Optimizer, data: tuple, steps: int) -> None:
    x, y, _ = data
    net.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()


def grow_once(net: GraphNet, move: tuple[str, str], data: tuple) -> tuple[GraphNet, IndexMap]:
    kind, target = move
    found = [c for c in graph_grow.candidates(net.spec, CFG, 0, seed=7)
             if (c.kind, c.target) == move]
    assert found, f"{kind} {target} is not a candidate of this network"
    _, grown, index_map = graph_grow.build(net, found[0], CFG, data)
    return grown, index_map


def new_rows(net: nn.Module, index_map: IndexMap) -> dict[str, Tensor]:
    """Every new unit's fan-in: the new rows of grown weights, every row of a new weight."""
    rows = {}
    for name, p in net.named_parameters():
        source = index_map[name]
        if p.dim() < 2:
            continue
        if source.name is None:
            rows[name] = torch.ones(p.shape[0], dtype=torch.bool)
        elif source.index and source.index[0] is not None and bool((source.index[0] < 0).any()):
            rows[name] = source.index[0] < 0
    return rows


def assert_moments_carried(old_opt, old_net, new_opt, new_net, index_map) -> None:
    old_params = dict(old_net.named_parameters())
    for name, p in new_net.named_parameters():
        source = index_map[name]
        if source.name is None:
            assert p not in new_opt.state
            continue
        old_state, new_state = old_opt.state[old_params[source.name]], new_opt.state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            moment, before = new_state[key], old_state[key]
            for dim, index in enumerate(source.index):
                if index is None:
                    continue
                new = (index < 0).nonzero().squeeze(1)
                assert torch.count_nonzero(moment.index_select(dim, new)) == 0, name
                moment = moment.index_select(dim, (index >= 0).nonzero().squeeze(1))
            assert torch.equal(moment, before), f"{name}.{key}"


@dataclass
class Grown:
    start: GraphNet
    nets: list[GraphNet]
    moved: list[dict[str, Tensor]]  # per move: weight -> each new row's |change| in 3 steps


def _grow_model(key: str) -> Grown:
    kind, name, moves = MODELS[key]
    torch.manual_seed(0)
    net = foreign_graph(_cfg(kind, name), SHAPE, N_CLASSES)
    data, x = _data(), _data(1)[0]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    adam_steps(net, opt, data, 2)
    start, nets, moved = copy.deepcopy(net), [], []
    for move in moves:
        grown, index_map = grow_once(net, move, data)
        for train in (False, True):
            torch.testing.assert_close(outputs(grown, x, train), outputs(net, x, train),
                                       atol=1e-4, rtol=0, msg=lambda m, at=move: f"{key} {at}: {m}")
        new_opt = torch.optim.Adam(grown.parameters(), lr=1e-2)
        carry_optimizer_state(opt, net, new_opt, grown, index_map)
        assert_moments_carried(opt, net, new_opt, grown, index_map)
        rows = new_rows(grown, index_map)
        before = {n: p.detach().clone() for n, p in grown.named_parameters() if n in rows}
        adam_steps(grown, new_opt, data, 3)
        params = dict(grown.named_parameters())
        moved.append({n: (params[n].detach() - before[n])[rows[n]].flatten(1).abs().sum(1)
                      for n in rows})
        net, opt = grown, new_opt
        nets.append(grown)
    return Grown(start, nets, moved)


@pytest.fixture(scope="module", params=FAST)
def grown(request) -> Grown:
    return _grow_model(request.param)


def test_five_moves_keep_outputs_and_carry_moments(grown: Grown):
    # asserted inside the growth (outputs in both modes, moments) move by move; here: it grew
    assert len(grown.nets) == 5
    assert sum(p.numel() for p in grown.nets[-1].parameters()) > sum(
        p.numel() for p in grown.start.parameters())


def test_new_units_learn(grown: Grown):
    assert_no_dead_units(grown)


def assert_no_dead_units(grown: Grown) -> None:
    """3 Adam steps after each move change every new unit's fan-in (each new row of a grown
    weight, each row of a new block's weights)."""
    for moved in grown.moved:
        assert moved
        for name, change in moved.items():  # (new rows,): |change| summed over each row
            assert bool((change > 0).all()), f"{name}: {int((change == 0).sum())} rows stayed"


def test_checkpoint_reloads_exactly(grown: Grown, tmp_path: Path):
    net = grown.nets[-1]
    save_checkpoint(tmp_path / "ck", net.spec, net.state_dict(), {"note": "grown"})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, GraphNet) and loaded.spec == net.spec and meta["note"] == "grown"
    state = net.state_dict()
    assert set(loaded.state_dict()) == set(state)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    x = _data(2)[0]
    assert torch.equal(outputs(loaded, x, False), outputs(net, x, False))


@pytest.mark.slow
def test_resnet50_grows_five_times_and_reloads(tmp_path: Path):
    result = _grow_model("timm-resnet50")  # outputs and moments checked move by move
    assert_no_dead_units(result)
    net = result.nets[-1]
    save_checkpoint(tmp_path / "ck", net.spec, net.state_dict(), {})
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.state_dict().items())
