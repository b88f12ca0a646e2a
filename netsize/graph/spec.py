"""A network as a graph of ops: the vocabulary every architecture is written in.

A `GraphSpec` is a frozen, JSON-able list of `Node`s in topological order. Each node names its
inputs ("input" is the network input); the last node is the output. Ops:

- conv: Conv2d(width, kernel, stride, padding, bias); depthwise: one filter per input channel
- linear: Linear(width, bias)
- norm: kind batch (BatchNorm1d/2d) or group (GroupNorm with `groups` groups); eps, momentum
- act: kind relu (gradient 1 at 0), leaky_relu (slope), gelu, silu, tanh, hardswish; the gates
  hardsigmoid and sigmoid (f(0) = 1/2: they feed a scale)
- pool: kind max or avg, kernel, stride (default: kernel), padding (max only)
- gap: global average pooling (C, H, W) -> (C,);  flatten: (C, H, W) -> (C*H*W,)
- dropout: p;  add: elementwise sum of equal shapes;  concat: along channels
- scale: an image (C, H, W) times a gate of C features (squeeze-excitation)

Shapes are per example: (C, H, W) for images, (F,) for features.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from netsize.graph.ops import ACTIVATIONS, out_shape
from netsize.graph.ops import OPS as OPS_TABLE

OPS = tuple(OPS_TABLE)  # every op is defined once, in netsize/graph/ops.py
ACTS = tuple(ACTIVATIONS)
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...] = ()
    width: int = 0  # conv/linear: output channels or features
    kernel: int = 1  # conv, pool
    stride: int = 1  # conv; pool (0: the kernel)
    padding: int = 0  # conv, max pool
    bias: bool = True  # conv, linear
    depthwise: bool = False  # conv: groups = channels, width = input channels
    kind: str = ""  # norm: batch | group; act: relu | ...; pool: max | avg
    groups: int = 1  # norm kind group: number of groups
    slope: float = 0.01  # act leaky_relu: negative slope
    p: float = 0.0  # dropout probability
    eps: float = 1e-5  # norm: added to the variance
    momentum: float = 0.1  # batch norm: running statistics' update rate

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that differ from the defaults (short, readable spec.json)."""
        full = asdict(self)
        default = asdict(Node(self.name, self.op))
        out = {k: v for k, v in full.items() if k in ("name", "op") or v != default[k]}
        if "inputs" in out:
            out["inputs"] = list(out["inputs"])
        return out


@dataclass(frozen=True)
class GraphSpec:
    input_shape: Shape
    n_outputs: int
    nodes: tuple[Node, ...]
    _shapes: dict[str, Shape] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_shapes", infer_shapes(self))

    # -- facts ------------------------------------------------------------------------------
    @property
    def output(self) -> str:
        return self.nodes[-1].name

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def shape(self, name: str) -> Shape:
        """Output shape of a node (or of "input") for one example."""
        return self.input_shape if name == "input" else self._shapes[name]

    def in_channels(self, node: Node) -> int:
        return self.shape(node.inputs[0])[0]

    def readers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def params(self) -> int:
        return sum(node_params(self, n) for n in self.nodes)

    def widths(self) -> list[int]:
        """Output widths of the conv and linear ops before the output layer."""
        return [n.width for n in self.nodes if n.op in ("conv", "linear")
                and n.name != self.output and not n.depthwise]

    def describe(self) -> str:
        widths = self.widths()
        shown = "-".join(map(str, widths[:8])) + ("-..." if len(widths) > 8 else "")
        return f"graph of {len(widths)} layers {shown}"

    # -- editing ----------------------------------------------------------------------------
    def replace_node(self, name: str, **changes: Any) -> GraphSpec:
        nodes = tuple(replace(n, **changes) if n.name == name else n for n in self.nodes)
        return replace(self, nodes=nodes)

    def insert_after(self, name: str, new: tuple[Node, ...], rewire: str) -> GraphSpec:
        """Insert `new` after node `name`; readers of `name` (except the new nodes) read
        `rewire` instead."""
        out: list[Node] = []
        for node in self.nodes:
            if node.name not in {n.name for n in new} and name in node.inputs:
                node = replace(node, inputs=tuple(rewire if i == name else i
                                                  for i in node.inputs))
            out.append(node)
            if node.name == name:
                out.extend(new)
        return replace(self, nodes=tuple(out))

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "graph", "input_shape": list(self.input_shape),
                "n_outputs": self.n_outputs, "nodes": [n.to_dict() for n in self.nodes]}

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> GraphSpec:
        nodes = tuple(Node(**{**n, "inputs": tuple(n.get("inputs", ()))}) for n in raw["nodes"])
        return GraphSpec(tuple(raw["input_shape"]), int(raw["n_outputs"]), nodes)


# ------------------------------------------------------------------------------------ shapes
def infer_shapes(spec: GraphSpec) -> dict[str, Shape]:
    """Every node's output shape; ValueError naming the node on any inconsistency."""
    if not spec.nodes:
        raise ValueError("nodes: a network needs at least one op")
    shapes: dict[str, Shape] = {"input": tuple(spec.input_shape)}
    for node in spec.nodes:
        if not NAME.match(node.name) or node.name in shapes:
            raise ValueError(f"nodes.{node.name}: names are unique letters, digits and _")
        if node.op not in OPS_TABLE:
            raise ValueError(f"nodes.{node.name}.op: must be one of {', '.join(OPS_TABLE)}")
        missing = [i for i in node.inputs if i not in shapes]
        if not node.inputs or missing:
            raise ValueError(f"nodes.{node.name}.inputs: must name earlier ops or 'input'")
        shapes[node.name] = out_shape(node, [shapes[i] for i in node.inputs])
    if shapes[spec.output] != (spec.n_outputs,):
        raise ValueError(f"nodes.{spec.output}: the last op must give {spec.n_outputs} "
                         "outputs per example")
    del shapes["input"]
    return shapes


def node_params(spec: GraphSpec, node: Node) -> int:
    return OPS_TABLE[node.op].params(node, [spec.shape(i) for i in node.inputs])
