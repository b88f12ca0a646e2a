"""A PyTorch module (a timm or torchvision CNN) read into the graph vocabulary with torch.fx.

symbolic_trace records the module's forward as a list of calls; each call becomes one op of a
GraphSpec (conv, depthwise conv, linear, batch/group norm, activation, pooling, global average
pooling, flatten, dropout, add, concat, scale) and its tensors are copied under the op's name, so
the GraphNet built from the spec computes the same function (ReLU becomes netsize's relu0, equal
but for its gradient 1 at 0) and grows, scores and prunes through the one growth core.
Identity modules are skipped. A global average pool keeps its channels as features (C,): the
1x1 convs of a squeeze-excitation gate read them as linear ops, and the gate's product with the
image is a scale op. A call outside this vocabulary is named in `Unsupported`.

The module is read, never changed; the spec's op names are the traced call names.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from netsize.graph.ops import out_shape
from netsize.graph.spec import GraphSpec, Node, Shape

_ACTS: dict[type, str] = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu",
                          nn.SiLU: "silu", nn.Tanh: "tanh", nn.Hardswish: "hardswish",
                          nn.Hardsigmoid: "hardsigmoid", nn.Sigmoid: "sigmoid"}
_ACT_CALLS: dict[Any, str] = {F.relu: "relu", torch.relu: "relu", "relu": "relu",
                              F.silu: "silu", F.gelu: "gelu", torch.sigmoid: "sigmoid",
                              "sigmoid": "sigmoid", F.hardswish: "hardswish",
                              F.hardsigmoid: "hardsigmoid", torch.tanh: "tanh"}
_ADD = (operator.add, operator.iadd, torch.add, "add", "add_")
_MUL = (operator.mul, operator.imul, torch.mul, "mul", "mul_")


class Unsupported(ValueError):
    """The module holds calls the graph vocabulary cannot express (`calls`: one line each)."""

    def __init__(self, calls: list[str]):
        super().__init__("; ".join(calls))
        self.calls = calls


class _Skip(Exception):
    """One call that cannot be read (its reason)."""


@dataclass
class Imported:
    spec: GraphSpec
    state: dict[str, Tensor]  # the GraphNet's state_dict (copies of the module's tensors)
    sources: dict[str, str]  # graph op -> the module path (or function) it was read from


def import_module(module: nn.Module, input_shape: Shape, n_outputs: int) -> Imported:
    """The graph network of `module` for inputs of `input_shape` (C, H, W)."""
    try:
        traced = fx.symbolic_trace(module)
    except Exception as exc:  # data-dependent control flow and the like
        raise Unsupported([f"torch.fx cannot trace {type(module).__name__} "
                           f"({type(exc).__name__})"]) from None
    reader = _Reader(tuple(input_shape), dict(traced.named_modules()))
    problems: list[str] = []
    for node in traced.graph.nodes:
        try:
            reader.read(node)
        except _Skip as why:
            problems.append(f"{node.name} ({why})")
            reader.alias[node.name] = ""  # later calls on it fail quietly: only causes are named
    if problems:
        raise Unsupported(problems)
    if reader.output != reader.nodes[-1].name:
        raise Unsupported(["the output is not the last call"])
    spec = GraphSpec(tuple(input_shape), n_outputs, tuple(reader.nodes))
    return Imported(spec, reader.state, reader.sources)


# ------------------------------------------------------------------------------- the reader
class _Reader:
    def __init__(self, input_shape: Shape, modules: dict[str, nn.Module]):
        self.modules = modules
        self.nodes: list[Node] = []
        self.shapes: dict[str, Shape] = {"input": input_shape}
        self.alias: dict[str, str] = {}  # fx node -> graph op whose output it is
        self.state: dict[str, Tensor] = {}
        self.sources: dict[str, str] = {}
        self.used: set[str] = set()
        self.output = ""

    def read(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            if "input" in self.alias.values():
                raise _Skip("a second input")
            self.alias[node.name] = "input"
        elif node.op == "output":
            self.output = self._arg(node.args[0])
        elif node.op == "call_module":
            self._module(node, self.modules[str(node.target)])
        elif node.op in ("call_function", "call_method"):
            self._function(node)
        else:
            raise _Skip(f"{node.op} is not a call")

    # -- helpers ------------------------------------------------------------------------------
    def _arg(self, arg: Any) -> str:
        if not isinstance(arg, fx.Node) or not self.alias.get(arg.name):
            raise _Skip("an input that is not a traced tensor")
        return self.alias[arg.name]

    def _emit(self, fx_node: fx.Node, op: str, inputs: tuple[str, ...], source: str,
              module: nn.Module | None = None, reshape: bool = False, **fields: Any) -> None:
        name = _name(fx_node.name, self.shapes)
        node = Node(name, op, inputs, **fields)
        try:
            self.shapes[name] = out_shape(node, [self.shapes[i] for i in inputs])
        except ValueError as error:
            raise _Skip(str(error).split(": ", 1)[-1]) from None
        self.nodes.append(node)
        self.alias[fx_node.name] = name
        self.sources[name] = source
        for key, value in (module.state_dict() if module is not None else {}).items():
            value = value.detach().clone()
            if reshape and key == "weight":  # a 1x1 conv on features is a linear op
                value = value.reshape(value.shape[0], -1)
            self.state[f"ops.{name}.{key}"] = value

    def _same(self, fx_node: fx.Node, x: str) -> None:
        self.alias[fx_node.name] = x

    # -- modules ------------------------------------------------------------------------------
    def _module(self, node: fx.Node, m: nn.Module) -> None:
        target = str(node.target)
        if target in self.used and any(True for _ in m.parameters(recurse=False)):
            raise _Skip(f"{target} is called twice (shared weights)")
        self.used.add(target)
        x = self._arg(node.args[0])
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Flatten) and len(self.shapes[x]) == 1
                                          and m.start_dim == 1 and m.end_dim == -1):
            self._same(node, x)
        elif isinstance(m, nn.Conv2d):
            self._conv(node, m, x, target)
        elif isinstance(m, nn.Linear):
            self._emit(node, "linear", (x,), target, m, width=m.out_features,
                       bias=m.bias is not None)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
            self._norm(node, m, x, target)
        elif type(m) in _ACTS and (not isinstance(m, nn.GELU) or m.approximate == "none"):
            slope = float(getattr(m, "negative_slope", 0.01))
            self._emit(node, "act", (x,), target, kind=_ACTS[type(m)], slope=slope)
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            self._pool(node, m, x, target)
        elif isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1):
            self._emit(node, "gap", (x,), target)
        elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            self._emit(node, "flatten", (x,), target)
        elif isinstance(m, nn.Dropout) and m.p <= 0.99:
            self._emit(node, "dropout", (x,), target, m, p=float(m.p))
        else:
            raise _Skip(f"{type(m).__name__} is not in the graph vocabulary")

    def _conv(self, node: fx.Node, m: nn.Conv2d, x: str, target: str) -> None:
        kernel, stride, padding = (_square(v) for v in (m.kernel_size, m.stride, m.padding))
        if None in (kernel, stride, padding) or _pair(m.dilation) != (1, 1) \
                or m.padding_mode != "zeros":
            raise _Skip("Conv2d with a non-square kernel, stride or padding, or dilation")
        bias = m.bias is not None
        if len(self.shapes[x]) == 1:  # on a global pool's (C, 1, 1) output
            if (kernel, stride, padding, m.groups) != (1, 1, 0, 1):
                raise _Skip("Conv2d on a 1x1 image other than a 1x1 conv")
            self._emit(node, "linear", (x,), target, m, reshape=True, width=m.out_channels,
                       bias=bias)
            return
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        if m.groups != 1 and not depthwise:
            raise _Skip("grouped Conv2d (only depthwise convs are known)")
        self._emit(node, "conv", (x,), target, m, width=0 if depthwise else m.out_channels,
                   kernel=kernel, stride=stride, padding=padding, bias=bias, depthwise=depthwise)

    def _norm(self, node: fx.Node, m: nn.Module, x: str, target: str) -> None:
        if isinstance(m, nn.GroupNorm):
            if not m.affine:
                raise _Skip("GroupNorm without affine parameters")
            self._emit(node, "norm", (x,), target, m, kind="group", groups=m.num_groups,
                       eps=float(m.eps))
            return
        assert isinstance(m, nn.modules.batchnorm._BatchNorm)
        if not (m.affine and m.track_running_stats) or m.momentum is None:
            raise _Skip("batch norm without affine parameters, running statistics or momentum")
        self._emit(node, "norm", (x,), target, m, kind="batch", eps=float(m.eps),
                   momentum=float(m.momentum))

    def _pool(self, node: fx.Node, m: nn.MaxPool2d | nn.AvgPool2d, x: str, target: str) -> None:
        kernel, stride, padding = (_square(v) for v in (m.kernel_size, m.stride, m.padding))
        plain = not m.ceil_mode and None not in (kernel, stride, padding) and (
            _pair(m.dilation) == (1, 1) and not m.return_indices
            if isinstance(m, nn.MaxPool2d) else padding == 0 and m.divisor_override is None)
        if not plain:
            raise _Skip(f"{type(m).__name__} with ceil_mode, dilation or a non-square window")
        kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
        self._emit(node, "pool", (x,), target, kind=kind, kernel=kernel, stride=stride,
                   padding=padding)

    # -- functions and methods ------------------------------------------------------------------
    def _function(self, node: fx.Node) -> None:
        fn, args, kwargs = node.target, node.args, node.kwargs
        where = getattr(fn, "__name__", str(fn))
        if fn in _ADD and len(args) == 2 and not kwargs:
            self._emit(node, "add", (self._arg(args[0]), self._arg(args[1])), where)
        elif fn in _MUL and len(args) == 2 and not kwargs:
            self._scale(node, self._arg(args[0]), self._arg(args[1]), where)
        elif fn in _ACT_CALLS and len(args) == 1:
            self._emit(node, "act", (self._arg(args[0]),), where, kind=_ACT_CALLS[fn])
        elif fn in (torch.flatten, "flatten") and _flat_args(args, kwargs):
            x = self._arg(args[0])
            if len(self.shapes[x]) == 1:
                self._same(node, x)
            else:
                self._emit(node, "flatten", (x,), where)
        elif fn is F.adaptive_avg_pool2d and _pair(_at(args, kwargs, 1, "output_size")) == (1, 1):
            self._emit(node, "gap", (self._arg(args[0]),), where)
        elif fn == "mean" and _spatial(_at(args, kwargs, 1, "dim")):
            self._emit(node, "gap", (self._arg(args[0]),), where)
        elif fn is torch.cat and _at(args, kwargs, 1, "dim") == 1 and isinstance(args[0], list |
                                                                                tuple):
            self._emit(node, "concat", tuple(self._arg(a) for a in args[0]), where)
        else:
            raise _Skip(f"{where} is not in the graph vocabulary")

    def _scale(self, node: fx.Node, a: str, b: str, where: str) -> None:
        image, gate = (a, b) if len(self.shapes[a]) == 3 else (b, a)
        if len(self.shapes[image]) != 3 or self.shapes[gate] != self.shapes[image][:1]:
            raise _Skip("a product other than an image times a per-channel gate")
        self._emit(node, "scale", (image, gate), where)


def _pair(value: Any) -> tuple[Any, Any]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)  # type: ignore


def _square(value: Any) -> int | None:
    a, b = _pair(value)
    return a if isinstance(a, int) and a == b else None


def _at(args: tuple, kwargs: dict, index: int, key: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(key)


def _flat_args(args: tuple, kwargs: dict) -> bool:
    start = _at(args, kwargs, 1, "start_dim")
    end = _at(args, kwargs, 2, "end_dim")
    return start == 1 and end in (None, -1)


def _spatial(dims: Any) -> bool:
    """mean over (H, W): dims 2 and 3 (or -2 and -1) of (N, C, H, W)."""
    return isinstance(dims, tuple | list) and sorted(d % 4 for d in dims) == [2, 3]


def _name(raw: str, taken: dict[str, Shape]) -> str:
    """A spec name (letters, digits, _; at most 64) from a traced call's name, unique."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    base = (base if base[:1].isalpha() else f"op_{base}")[:56]
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name
