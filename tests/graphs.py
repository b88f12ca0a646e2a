"""Small hand-written graph networks of every family, for the graph surgery, scoring, growth
and pruning tests; and old layer-list checkpoints' tensors, written without the old network
class."""

from __future__ import annotations

import torch
from torch import nn

from netsize.graph.build import GraphNet, build_graph
from netsize.graph.spec import GraphSpec, Node
from netsize.networks import layer_list_as_graph
from netsize.spec import NetSpec


class Nodes:
    """Appends nodes; each method returns the new node's name."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def op(self, name: str, op: str, *inputs: str, **kw: object) -> str:
        self.nodes.append(Node(name, op, inputs, **kw))  # type: ignore[arg-type]
        return name

    def conv(self, name: str, x: str, width: int, kernel: int = 3, stride: int = 1,
             bias: bool = True) -> str:
        return self.op(name, "conv", x, width=width, kernel=kernel, stride=stride,
                       padding=kernel // 2, bias=bias)

    def bn(self, name: str, x: str) -> str:
        return self.op(name, "norm", x, kind="batch")

    def act(self, name: str, x: str, kind: str = "relu") -> str:
        return self.op(name, "act", x, kind=kind, slope=0.2)

    def pool(self, name: str, x: str, kind: str = "max") -> str:
        return self.op(name, "pool", x, kind=kind, kernel=2, stride=2)

    def spec(self, shape: tuple[int, ...], n_out: int = 3) -> GraphSpec:
        return GraphSpec(shape, n_out, tuple(self.nodes))


def mlp() -> GraphSpec:
    b = Nodes()
    x = b.op("drop1", "dropout", b.act("act1", b.bn("bn1", b.op("fc1", "linear", "input",
                                                                    width=5))))
    x = b.op("drop2", "dropout", b.act("act2", b.bn("bn2", b.op("fc2", "linear", x, width=4)),
                                       "gelu"))
    b.op("out", "linear", x, width=3)
    return b.spec((6,))


def stage_cnn() -> GraphSpec:
    b = Nodes()
    x = b.act("a1", b.bn("bn1", b.conv("c1", "input", 3)))
    x = b.pool("p1", b.act("a2", b.bn("bn2", b.conv("c2", x, 4))))
    x = b.op("gap", "gap", b.act("a3", b.bn("bn3", b.conv("c3", x, 5)), "leaky_relu"))
    b.op("out", "linear", x, width=3)
    return b.spec((2, 8, 8))


def flatten_cnn() -> GraphSpec:
    b = Nodes()
    x = b.pool("p1", b.act("a1", b.bn("bn1", b.conv("c1", "input", 3))))
    x = b.pool("p2", b.act("a2", b.bn("bn2", b.conv("c2", x, 4))), "avg")
    x = b.op("flat", "flatten", x)  # 4 x 2 x 2
    x = b.act("a3", b.bn("bn3", b.op("fc1", "linear", x, width=6)), "tanh")
    b.op("out", "linear", x, width=3)
    return b.spec((3, 8, 8))


def secnn() -> GraphSpec:
    """Three conv blocks; block 1 pooled twice more and concatenated with block 3."""
    b = Nodes()
    x, outs = "input", []
    for i, width in enumerate((3, 4, 5), start=1):
        x = b.op(f"d{i}", "dropout", b.conv(f"c{i}", x, width))
        x = b.pool(f"p{i}", b.act(f"a{i}", b.bn(f"bn{i}", x), "leaky_relu"))
        outs.append(x)
    skip = b.pool("s2", b.pool("s1", outs[0]))
    x = b.op("cat", "concat", skip, outs[2])  # 3 + 5 channels, 2 x 2
    x = b.op("flat", "flatten", b.act("a4", b.conv("c4", x, 4, kernel=1), "leaky_relu"))
    x = b.op("d5", "dropout", b.act("a5", b.bn("bn5", b.op("fc1", "linear", x, width=6)),
                                    "leaky_relu"))
    b.op("out", "linear", b.bn("bn6", x), width=3)
    return b.spec((3, 16, 16))


def resnet() -> GraphSpec:
    """Stem, identity basic block, projection basic block (stride 2), two bottlenecks (the
    first with a projection)."""
    b = Nodes()
    stem = b.act("a0", b.bn("bn0", b.conv("stem", "input", 4, bias=False)))
    y = b.act("a1", b.bn("bn1", b.conv("c1", stem, 3, bias=False)))
    y = b.bn("bn2", b.conv("c2", y, 4, bias=False))
    x = b.act("a2", b.op("add1", "add", stem, y))
    y = b.act("a3", b.bn("bn3", b.conv("c3", x, 5, stride=2, bias=False)))
    y = b.bn("bn4", b.conv("c4", y, 6, bias=False))
    short = b.bn("bnp1", b.conv("proj1", x, 6, kernel=1, stride=2, bias=False))
    x = b.act("a4", b.op("add2", "add", short, y))
    for i, proj in ((1, True), (2, False)):
        y = b.act(f"b{i}a1", b.bn(f"b{i}n1", b.conv(f"b{i}c1", x, 2, kernel=1, bias=False)))
        y = b.act(f"b{i}a2", b.bn(f"b{i}n2", b.conv(f"b{i}c2", y, 2, bias=False)))
        y = b.bn(f"b{i}n3", b.conv(f"b{i}c3", y, 8, kernel=1, bias=False))
        short = b.bn("bnp2", b.conv("proj2", x, 8, kernel=1, bias=False)) if proj else x
        x = b.act(f"b{i}a3", b.op(f"b{i}add", "add", short, y))
    b.op("out", "linear", b.op("gap", "gap", x), width=3)
    return b.spec((2, 8, 8))


def wrn() -> GraphSpec:
    """Pre-activation blocks: identity, then projection with stride 2 from the pre-activation."""
    b = Nodes()
    x = b.conv("stem", "input", 3, bias=False)
    h = b.act("r1", b.bn("n1", x))
    y = b.conv("c2", b.act("r2", b.bn("n2", b.conv("c1", h, 4, bias=False))), 3, bias=False)
    x = b.op("add1", "add", x, y)
    h = b.act("r3", b.bn("n3", x))
    y = b.conv("c4", b.act("r4", b.bn("n4", b.conv("c3", h, 4, stride=2, bias=False))), 5,
               bias=False)
    x = b.op("add2", "add", b.conv("proj", h, 5, kernel=1, stride=2, bias=False), y)
    x = b.op("gap", "gap", b.act("r5", b.bn("n5", x)))
    b.op("out", "linear", x, width=3)
    return b.spec((2, 8, 8))


def vgg() -> GraphSpec:
    """No norms (deepening zeroes the branch conv), flatten head with hidden layers."""
    b = Nodes()
    x = b.act("a1", b.conv("c1", "input", 3))
    x = b.pool("p1", b.act("a2", b.conv("c2", x, 4)))
    x = b.pool("p2", b.act("a3", b.conv("c3", x, 4)))
    x = b.op("flat", "flatten", x)
    x = b.act("a5", b.op("fc2", "linear", b.act("a4", b.op("fc1", "linear", x, width=6)),
                         width=5))
    b.op("out", "linear", x, width=3)
    return b.spec((2, 8, 8))


def group_norm() -> GraphSpec:
    """Channels per group 3, 2 and (on features) 2; a residual add through group norms."""
    b = Nodes()
    x = b.act("a1", b.op("gn1", "norm", b.conv("c1", "input", 6), kind="group", groups=2),
              "silu")
    y = b.op("gn2", "norm", b.conv("c2", x, 6), kind="group", groups=3)
    x = b.pool("p1", b.act("a2", b.op("add1", "add", x, y)))
    x = b.op("flat", "flatten", x)
    x = b.act("a3", b.op("gn3", "norm", b.op("fc1", "linear", x, width=4), kind="group",
                         groups=2), "tanh")
    b.op("out", "linear", x, width=3)
    return b.spec((2, 4, 4))


def depthwise() -> GraphSpec:
    b = Nodes()
    x = b.act("a1", b.bn("bn1", b.conv("c1", "input", 3)))
    x = b.act("a2", b.bn("bn2", b.op("dw1", "conv", x, kernel=3, padding=1, depthwise=True,
                                     width=3)))
    x = b.act("a3", b.bn("bn3", b.conv("pw1", x, 4, kernel=1)))
    x = b.act("a4", b.op("dw2", "conv", x, kernel=3, stride=2, padding=1, depthwise=True))
    b.op("out", "linear", b.op("gap", "gap", x), width=3)
    return b.spec((2, 8, 8))


FAMILIES = {"mlp": mlp, "stage_cnn": stage_cnn, "flatten_cnn": flatten_cnn, "secnn": secnn,
            "resnet": resnet, "wrn": wrn, "vgg": vgg, "group_norm": group_norm,
            "depthwise": depthwise}


def randomize(net: nn.Module, gen: torch.Generator) -> None:
    """Norms off their defaults (so a wrong copy shows) and running stats away from 0/1."""
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
                c = mod.weight.shape[0]
                mod.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64) * 0.3)
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
                mod.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)


def make(spec: GraphSpec, seed: int = 0) -> GraphNet:
    torch.manual_seed(seed)
    net = build_graph(spec).double()
    randomize(net, torch.Generator().manual_seed(seed + 100))
    return net


def batch(spec: GraphSpec, n: int = 8, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *spec.input_shape, generator=gen, dtype=torch.float64)


def layer_list_net(spec: NetSpec, seed: int = 0) -> GraphNet:
    """A layer-list network (netsize 0.1) as its converted graph, seeded."""
    torch.manual_seed(seed)
    return build_graph(layer_list_as_graph(spec)[0])


def as_layer_list_state(spec: NetSpec,
                        state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The converted graph's tensors under the old layer-list names (hidden.i.op.weight,
    head.bias, ...), copied: the inverse of layer_list_as_graph's name map, which must be one
    to one and cover every tensor."""
    names = layer_list_as_graph(spec)[1]
    old_name = {new: old for old, new in names.items()}
    assert len(old_name) == len(names) and set(old_name) == set(state)
    return {old_name[k]: v.detach().clone() for k, v in state.items()}
