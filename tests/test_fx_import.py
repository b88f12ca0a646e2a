"""netsize.graph.fx_import and netsize.foreign_graph: timm / torchvision models read into the
graph vocabulary compute the model's function, their groups are the ones growth needs, and what
the graph cannot read is named."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from netsize import foreign
from netsize.foreign_graph import foreign_graph, left_alone
from netsize.graph.build import build_graph
from netsize.graph.fx_import import Unsupported, import_module
from netsize.graph.groups import find_groups
from netsize.graph.spec import GraphSpec, Node
from netsize.recipe import ForeignModelConfig

SHAPE = (3, 32, 32)


def _cfg(kind: str, name: str, **kw) -> ForeignModelConfig:
    return ForeignModelConfig(kind=kind, name=name, num_classes=10, **kw)


@pytest.mark.parametrize("kind,name", [("timm", "resnet18"), ("torchvision", "resnet18"),
                                       ("torchvision", "mobilenet_v3_small")])
def test_imported_graph_computes_the_model(kind: str, name: str):
    torch.manual_seed(0)
    model = foreign.create_model(_cfg(kind, name), SHAPE, 10)
    imported = import_module(model, SHAPE, 10)
    net = build_graph(imported.spec)
    net.load_state_dict(imported.state, strict=True)
    x = torch.randn(3, *SHAPE)
    for train in (False, True):
        a, b = copy.deepcopy(model).train(train), copy.deepcopy(net).train(train)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            want = a(x)
            torch.manual_seed(1)
            got = b(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # the same tensors (a 1x1 conv on a gate's features is stored as a linear weight)
    assert all(torch.equal(p.reshape(q.shape), q) for p, q in zip(
        model.state_dict().values(), imported.state.values(), strict=True))


def test_mobilenet_groups_carry_depthwise_convs_and_gates():
    spec = import_module(foreign.create_model(_cfg("torchvision", "mobilenet_v3_small"),
                                              SHAPE, 10), SHAPE, 10).spec
    groups = {g.name: g for g in find_groups(spec)}
    expand = groups["features_4_block_0_0"]  # 1x1 expansion -> depthwise 5x5 -> SE -> project
    assert expand.producers == ("features_4_block_0_0", "features_4_block_2_fc2")
    assert expand.consumers == ("features_4_block_2_fc1", "features_4_block_3_0")
    ops = {spec.node(n).op for n in expand.path}
    assert {"conv", "norm", "act", "gap", "scale"} <= ops and not expand.coupled
    assert spec.node("features_4_block_1_0").depthwise and "features_4_block_1_0" in expand.path
    stream = groups["features_4_block_3_0"]  # blocks 4-6 add into one 40-channel stream
    assert stream.coupled and stream.units == 40 and len(stream.producers) == 3


def test_a_gate_read_by_anything_but_a_scale_cannot_grow():
    def spec(gate_into_scale: bool) -> GraphSpec:
        nodes = [Node("c1", "conv", ("input",), width=4, kernel=3, padding=1),
                 Node("g", "act", ("c1",), kind="hardsigmoid" if gate_into_scale else "relu"),
                 Node("h", "act", ("c1",), kind="hardsigmoid"),
                 Node("gap", "gap", ("g",)), Node("fc", "linear", ("gap",), width=3)]
        return GraphSpec((2, 4, 4), 3, tuple(nodes))

    assert [g.name for g in find_groups(spec(False))] == ["c1"]  # h is read by nothing
    assert find_groups(spec(True)) == []  # a gate (1/2 at zero fan-in) read by a pooling


def test_width_multiplier_keeps_a_share_of_every_group():
    torch.manual_seed(0)
    full = foreign_graph(_cfg("timm", "resnet18"), SHAPE, 10)
    torch.manual_seed(0)
    small = foreign_graph(_cfg("timm", "resnet18", width_multiplier=0.25), SHAPE, 10)
    units = {g.name: g.units for g in find_groups(full.spec)}
    assert {g.name: g.units for g in find_groups(small.spec)} == {
        name: round(u * 0.25) for name, u in units.items()}
    fc = small.ops["fc"]
    assert isinstance(fc, nn.Linear) and fc.in_features == 128 and fc.out_features == 10
    assert small(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_weights_and_width_multiplier_do_not_mix():
    with pytest.raises(ValueError, match="width_multiplier"):
        _cfg("timm", "resnet18", weights="w.safetensors", width_multiplier=0.5)


def test_calls_outside_the_vocabulary_are_named():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 30, 30])
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.norm(self.conv(x)).amax((2, 3)))

    with pytest.raises(Unsupported) as info:
        import_module(Odd(), SHAPE, 2)
    assert any(c.startswith("norm (LayerNorm") for c in info.value.calls)
    assert any(c.startswith("amax") for c in info.value.calls)


def test_left_alone_names_streams_and_the_head():
    torch.manual_seed(0)
    spec = foreign_graph(_cfg("timm", "resnet18", width_multiplier=0.25), SHAPE, 10).spec
    line = left_alone(spec, coupled=False)
    assert "8 growable groups" in line and "4 residual streams" in line and "fc" in line
    assert "12 growable groups" in left_alone(spec, coupled=True)
