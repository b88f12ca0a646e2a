"""The op table: everything netsize knows about each op of the graph vocabulary, in one place.

An op is its output shape (and the checks of its inputs), the module holding its tensors (if
any), its forward and its parameter count. A new op is one entry in OPS; the spec, the builder
and the strict reader take everything from here, and growth passes an op's channels through
unchanged unless it is a producer (conv, linear), flatten, concat, add or scale. A new activation is
one entry in ACTIVATIONS. Shapes are per example: (C, H, W) or (F,).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from netsize.model import relu0

if TYPE_CHECKING:
    from netsize.graph.spec import Node

Shape = tuple[int, ...]
Tensor = torch.Tensor

def _hardsigmoid(x: Tensor) -> Tensor:
    """relu6(x + 3) / 6 as F.hardsigmoid, in ops autograd differentiates twice (GradMax's
    fan-out search takes a double backward; F.hardsigmoid's backward has no derivative)."""
    return (x + 3).clamp(0, 6) / 6


def _hardswish(x: Tensor) -> Tensor:
    return x * _hardsigmoid(x)


# f(0) = 0 for every kind but the gates (a zero-fan-in unit outputs 0); relu's gradient at 0 is
# 1 (relu0), so such a unit still learns (GradMax)
ACTIVATIONS: dict[str, Callable[[Node], Callable[[Tensor], Tensor]]] = {
    "relu": lambda node: relu0,
    "leaky_relu": lambda node: lambda x: F.leaky_relu(x, node.slope),
    "gelu": lambda node: F.gelu,
    "silu": lambda node: F.silu,
    "tanh": lambda node: torch.tanh,
    "hardswish": lambda node: _hardswish,  # f(0) = 0, f'(0) = 1/2 (MobileNetV3)
    "hardsigmoid": lambda node: _hardsigmoid,  # a gate: f(0) = 1/2
    "sigmoid": lambda node: torch.sigmoid,  # a gate: f(0) = 1/2
}
# activations with f(0) != 0: growth passes new channels through them only into a scale gate,
# where they multiply a new (zero) channel, and depth growth never copies them
GATES = frozenset({"hardsigmoid", "sigmoid"})


@dataclass(frozen=True)
class Op:
    shape: Callable[[Node, list[Shape], str], Shape]  # (node, input shapes, key) -> output
    run: Callable[[Node, list[Tensor], Any], Tensor]  # (node, inputs, module or None) -> output
    module: Callable[[Node, list[Shape]], nn.Module | None] = lambda node, ins: None
    params: Callable[[Node, list[Shape]], int] = lambda node, ins: 0
    kinds: tuple[str, ...] = ()  # the values `kind` may take ("" when unused)
    inputs: str = "one"  # one | many


def _image(where: str, x: Shape, op: str) -> None:
    if len(x) != 3:
        raise ValueError(f"{where}: {op} needs images (C, H, W), got {x}")


def _positive(where: str, shape: Shape) -> Shape:
    if min(shape) < 1:
        raise ValueError(f"{where}: the image is too small here ({shape}); use fewer poolings "
                         "or strides")
    return shape


# -------------------------------------------------------------------------------------- conv
def _conv_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    x = ins[0]
    _image(where, x, "conv")
    if not node.depthwise and node.width < 1:
        raise ValueError(f"{where}.width: a conv needs a width")
    size = tuple((s + 2 * node.padding - node.kernel) // node.stride + 1 for s in x[1:])
    return _positive(where, (x[0] if node.depthwise else node.width, *size))


def _conv_module(node: Node, ins: list[Shape]) -> nn.Module:
    c_in = ins[0][0]
    out = c_in if node.depthwise else node.width
    return nn.Conv2d(c_in, out, node.kernel, node.stride, node.padding, bias=node.bias,
                     groups=c_in if node.depthwise else 1)


def _conv_params(node: Node, ins: list[Shape]) -> int:
    c_in = ins[0][0]
    per_filter = node.kernel**2 * (1 if node.depthwise else c_in)
    return (c_in if node.depthwise else node.width) * (per_filter + int(node.bias))


# ------------------------------------------------------------------------------------ linear
def _linear_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    if len(ins[0]) != 1 or node.width < 1:
        raise ValueError(f"{where}: linear needs features (flatten or gap first) and width")
    return (node.width,)


# -------------------------------------------------------------------------------------- norm
def _norm_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    if node.kind == "group" and ins[0][0] % node.groups:
        raise ValueError(f"{where}.groups: must divide the {ins[0][0]} channels")
    return ins[0]


def _norm_module(node: Node, ins: list[Shape]) -> nn.Module:
    c = ins[0][0]
    if node.kind == "group":
        return nn.GroupNorm(node.groups, c, eps=node.eps)
    kind = nn.BatchNorm2d if len(ins[0]) == 3 else nn.BatchNorm1d
    return kind(c, eps=node.eps, momentum=node.momentum)


# ------------------------------------------------------------------------ pooling, reshaping
def _pool_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    x = ins[0]
    _image(where, x, "pool")
    if 2 * node.padding > node.kernel or (node.padding and node.kind != "max"):
        raise ValueError(f"{where}.padding: only max pooling pads, by at most half the kernel")
    stride = node.stride or node.kernel
    return _positive(where, (x[0], *((s + 2 * node.padding - node.kernel) // stride + 1
                                     for s in x[1:])))


def _pool_run(node: Node, ins: list[Tensor], module: Any) -> Tensor:
    if node.kind == "max":  # padding counts as -inf: a new all-zero channel stays 0
        return F.max_pool2d(ins[0], node.kernel, node.stride or node.kernel, node.padding)
    return F.avg_pool2d(ins[0], node.kernel, node.stride or node.kernel)


def _gap_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    _image(where, ins[0], "gap")
    return (ins[0][0],)


def _flatten_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    _image(where, ins[0], "flatten")
    c, h, w = ins[0]
    return (c * h * w,)


# ------------------------------------------------------------------------------------ merges
def _add_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    if any(s != ins[0] for s in ins):
        raise ValueError(f"{where}: add needs inputs of one shape, got {ins}")
    return ins[0]


def _concat_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    x = ins[0]
    if any(len(s) != len(x) or s[1:] != x[1:] for s in ins):
        raise ValueError(f"{where}: concat needs equal sizes apart from channels, got {ins}")
    return (sum(s[0] for s in ins), *x[1:])


def _scale_shape(node: Node, ins: list[Shape], where: str) -> Shape:
    if len(ins) != 2 or len(ins[0]) != 3 or ins[1] != ins[0][:1]:
        raise ValueError(f"{where}: scale needs an image (C, H, W) and a gate of C features, "
                         f"got {ins}")
    return ins[0]


def _scale_run(node: Node, ins: list[Tensor], module: Any) -> Tensor:
    return ins[0] * ins[1][:, :, None, None]  # (N, C, H, W) x (N, C): squeeze-excitation


def _add_run(node: Node, ins: list[Tensor], module: Any) -> Tensor:
    out = ins[0]
    for other in ins[1:]:
        out = out + other
    return out


def _same(node: Node, ins: list[Shape], where: str) -> Shape:
    return ins[0]


def _by_module(node: Node, ins: list[Tensor], module: Any) -> Tensor:
    return module(ins[0])  # type: ignore[no-any-return]


OPS: dict[str, Op] = {
    "conv": Op(_conv_shape, _by_module, _conv_module, _conv_params),
    "linear": Op(_linear_shape, _by_module,
                 lambda node, ins: nn.Linear(ins[0][0], node.width, bias=node.bias),
                 lambda node, ins: node.width * (ins[0][0] + int(node.bias))),
    "norm": Op(_norm_shape, _by_module, _norm_module, lambda node, ins: 2 * ins[0][0],
               kinds=("batch", "group")),
    "act": Op(_same, lambda node, ins, module: ACTIVATIONS[node.kind](node)(ins[0]),
              kinds=tuple(ACTIVATIONS)),
    "pool": Op(_pool_shape, _pool_run, kinds=("max", "avg")),
    "gap": Op(_gap_shape, lambda node, ins, module: ins[0].mean(dim=(2, 3))),
    "flatten": Op(_flatten_shape, lambda node, ins, module: ins[0].flatten(1)),
    "dropout": Op(_same, _by_module, lambda node, ins: nn.Dropout(node.p)),
    "add": Op(_add_shape, _add_run, inputs="many"),
    "concat": Op(_concat_shape, lambda node, ins, module: torch.cat(ins, dim=1),
                 inputs="many"),
    "scale": Op(_scale_shape, _scale_run, inputs="many"),  # image x per-channel gate
}


def out_shape(node: Node, ins: list[Shape]) -> Shape:
    """The op's output shape from its inputs' (ValueError naming the node otherwise)."""
    where = f"nodes.{node.name}"
    many = OPS[node.op].inputs == "many"
    if many and len(ins) < 2:
        raise ValueError(f"{where}.inputs: {node.op} needs two or more inputs")
    if not many and len(ins) != 1:
        raise ValueError(f"{where}.inputs: {node.op} takes one input")
    return OPS[node.op].shape(node, ins, where)
