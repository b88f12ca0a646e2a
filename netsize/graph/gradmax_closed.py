"""GradMax's matrix M in closed form for a plain group, from one backward pass.

M (D_out, D_in) gives the new units' fan-in gradient from their fan-out: g(U) = U^T M
(netsize.graph.scores.FanOutProbe). Building M row by row takes D_out / k backward passes of
the whole network; for a plain group it takes one:

With zero fan-in the new units output 0, so the network and every gradient outside the new
entries are those of the network before growth: G_c = dL/dz_c at each consumer's output does
not depend on U. With A_d the new channel's input to a consumer when fan-in entry d alone is 1
(the path linearised at the new channel's value, 0), the chain rule gives

    M[(consumer c, fan-out entry e), d] = sum over examples and positions of G_c * (A_d read
    through entry e)  =  the consumer's weight gradient with A_d as input channel d.

A_d of a producer weight entry is a column of the producer input's im2col (F.unfold); of a
producer or norm bias, ones; of a norm gain, the normalised zero. Pushing the D_in maps through
the path (each op linearised at 0: norm scale, activation slope, max pooling's routing of a
constant plane, averages, flatten) and taking one weight gradient per consumer costs about one
layer's forward on D_in channels.

Plain: one producer (conv or linear) whose output is one segment, channel-wise ops on the way
(batch norm, activation, pool, gap, flatten, dropout) and conv or linear consumers that do not
produce the group. Anything else (concat, add, scale, group norm, depthwise convs) returns None
and keeps the row-by-row M; tests/test_gradmax_closed.py checks the two agree on every family.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

from netsize.graph.build import GraphNet
from netsize.graph.groups import Group
from netsize.graph.ops import ACTIVATIONS, GATES
from netsize.graph.per_example import Capture, capture
from netsize.graph.spec import Node

if TYPE_CHECKING:
    from netsize.graph.scores import FanOutProbe

PASS_THROUGH = ("norm", "act", "pool", "gap", "flatten", "dropout")
Block = tuple[str, str]  # (op, parameter): one fan-in parameter's entries of a unit


def closed_form_matrix(probe: FanOutProbe, cap: Capture | None = None) -> Tensor | None:
    """M of a plain group (None otherwise), equal to scores.gradmax_matrix(probe). `cap`: the
    network's capture (any network of the same function: before growth or the probe)."""
    if not applies(probe):
        return None
    cap = cap or _capture(probe)
    maps = consumer_maps(probe, cap)
    n = len(probe.x)  # the captured gradients are of the summed loss; M is of the mean
    rows = [_consumer_rows(_net(probe).spec.node(c), _weight(probe, c), m,
                           cap.grads[f"ops.{c}"] / n) for c, m in maps.items()]
    return torch.cat(rows, dim=0)


def fanin_grads(probe: FanOutProbe, u: Tensor, cap: Capture) -> Tensor | None:
    """(N, k * D_in): each example's gradient of its loss with respect to the new units'
    fan-in entries in the network widened with fan-out u (D_out, k), for a plain group; the
    new fan-out entries' gradients are 0 there (they read the new units' zeros)."""
    if not applies(probe):
        return None
    maps = consumer_maps(probe, cap)
    columns = probe.fan_out_weights(u)  # {consumer: its new columns (O, k * mult, ...)}
    total = None
    for c, m in maps.items():
        node, w, grad_out = _net(probe).spec.node(c), columns[c], cap.grads[f"ops.{c}"]
        n, d, k = len(m), m.shape[1], u.shape[1]
        if node.op == "conv":  # the new input channels' gradient: (N, k, H, W)
            delta = conv2d_input((n, k, *m.shape[2:]), w, grad_out, node.stride, node.padding)
        else:  # (N, k, features per unit)
            delta = torch.einsum("no,ojm->njm", grad_out, w.reshape(w.shape[0], k, -1))
        part = torch.einsum("njp,ndp->njd", delta.reshape(n, k, -1), m.reshape(n, d, -1))
        total = part if total is None else total + part
    assert total is not None
    return total.flatten(1)


def consumer_maps(probe: FanOutProbe, cap: Capture) -> dict[str, Tensor]:
    """{consumer: (N, D_in, ...)}: the new channel at the consumer's input as each fan-in
    entry alone is 1 (a plain group); kept on the probe for the capture it was made from."""
    if probe.closed_maps is not None and probe.closed_maps[0] is cap:
        return probe.closed_maps[1]
    group, spec = probe.group, _net(probe).spec
    owner = f"ops.{group.producers[0]}"
    producer = _net(probe).ops[group.producers[0]]
    x_in = cap.patches(owner, producer) if isinstance(producer, nn.Conv2d) \
        else cap.inputs[owner]  # (N, C_in*kh*kw, L) for a conv, (N, F_in) for a linear
    blocks = _blocks(probe)
    tangents: dict[str, dict[Block, Tensor]] = {}
    for name in (*group.producers, *group.path):  # topological order
        node = spec.node(name)
        upstream = {} if name in group.producers else tangents[node.inputs[0]]
        tangents[name] = {b: _linearised(probe, node, t) for b, t in upstream.items()}
        for block in blocks:
            if block[0] == name:
                tangents[name][block] = _injected(probe, node, block[1], x_in)
    maps = {c: _stacked(probe, tangents[spec.node(c).inputs[0]], blocks)
            for c in group.consumers}
    probe.closed_maps = (cap, maps)
    return maps


MAX_ELEMENTS = 2**25  # the fan-in entries' maps, N x D_in x H x W: 128 MiB in float32


def applies(probe: FanOutProbe) -> bool:
    """A plain group whose maps fit MAX_ELEMENTS (wide convs on large images do not: they keep
    the row-by-row M or power iteration, whose memory is a few passes')."""
    if not plain(probe):
        return False
    producer = probe.group.producers[0]
    d_in = sum(_block_size(probe, block) for block in _blocks(probe))
    return len(probe.x) * d_in * math.prod(_net(probe).spec.shape(producer)[1:]) <= MAX_ELEMENTS


def plain(probe: FanOutProbe) -> bool:
    """Whether the closed form reads this group (see the module's docstring)."""
    group, spec = probe.group, _net(probe).spec
    if group.coupled or len(group.producers) != 1 or not group.consumers:
        return False
    nodes = [spec.node(n) for n in (*group.producers, *group.path, *group.consumers)]
    inside = {*group.producers, *group.path}
    producer = nodes[0]
    path_ok = all(n.op in PASS_THROUGH and not _is_group_norm(n) and n.kind not in GATES
                  and len(group.sites_of(n.name)) == 1 and n.inputs[0] in inside
                  for n in nodes[1 : 1 + len(group.path)])
    consumers_ok = all(_is_dense(n) and n.name not in inside and n.inputs[0] in inside
                       and len(group.columns_of(n.name)) == 1
                       for n in nodes[-len(group.consumers):])
    owners = all(op in inside and tensor in ("weight", "bias") for op, tensor in _blocks(probe))
    norms_unflattened = all(group.sites_of(n.name)[0].mult == 1 for n in nodes
                            if n.op == "norm")
    return (_is_dense(producer) and len(group.sites_of(producer.name)) == 1 and path_ok
            and consumers_ok and owners and norms_unflattened
            and all(probe.old_rows[i] is None for i in range(len(group.consumers))))


def _blocks(probe: FanOutProbe) -> list[Block]:
    """The fan-in parameters ("ops.OP.TENSOR") as (op, tensor), in fan-in order."""
    return [cast(Block, tuple(name.split(".")[1:3])) for name, _ in probe.fan_in]


def _net(probe: FanOutProbe) -> GraphNet:
    return cast(GraphNet, probe.net)


def _weight(probe: FanOutProbe, op: str) -> Tensor:
    return cast(nn.Module, _net(probe).ops[op]).weight  # type: ignore[return-value]


def _is_dense(node: Node) -> bool:
    return node.op == "linear" or (node.op == "conv" and not node.depthwise)


def _is_group_norm(node: Node) -> bool:
    return node.op == "norm" and node.kind == "group"


def group_capture(net: nn.Module, group: Group, x: Tensor, y: Tensor, task: str) -> Capture:
    """What the closed form reads of a network (before growth, or a probe): the producer's
    input and the consumers' output gradients."""
    owners = [f"ops.{n}" for n in (*group.producers, *group.consumers)]
    return capture(net, owners, x, y, task)


def _capture(probe: FanOutProbe) -> Capture:
    return group_capture(probe.net, probe.group, probe.x, probe.y, probe.task)


def _new_entries(probe: FanOutProbe, op: str, tensor: str) -> Tensor:
    """Unit 0's entries of an op's per-channel tensor (all new units start alike)."""
    site = probe.group.sites_of(op)[0]
    start = probe.group.insert_at((site,))[0][0]
    module = _net(probe).ops[op]
    return getattr(module, tensor).detach()[start : start + site.mult]


def _norm_scale(probe: FanOutProbe, node: Node) -> Tensor:
    """Batch norm in eval mode on the new channel: d out / d in = gamma / sqrt(var + eps)."""
    gamma, var = _new_entries(probe, node.name, "weight"), _new_entries(probe, node.name,
                                                                        "running_var")
    return (gamma / (var + node.eps).sqrt()).reshape(())


def _linearised(probe: FanOutProbe, node: Node, t: Tensor) -> Tensor:
    """One path op linearised at the new channel's value 0; t: (N, D, ...) with D the fan-in
    entries as channels (spatial (H, W) on images, () on features, (H*W,) after a flatten)."""
    if node.op == "norm":
        return t * _norm_scale(probe, node)
    if node.op == "act":
        return t * _slope_at_zero(node.kind, node.slope, t.dtype)
    if node.op == "pool":
        stride = node.stride or node.kernel
        if node.kind == "avg":
            return F.avg_pool2d(t, node.kernel, stride)
        plane = torch.zeros((1, 1, *t.shape[2:]), dtype=t.dtype, device=t.device)
        _, idx = F.max_pool2d(plane, node.kernel, stride, node.padding, return_indices=True)
        # a constant plane routes every window to its first element, as autograd does
        picked = t.flatten(2).index_select(2, idx.flatten())
        return picked.reshape(*t.shape[:2], *idx.shape[2:])
    if node.op == "gap":
        return t.mean(dim=(2, 3))
    if node.op == "flatten":
        return t.flatten(2)
    return t  # dropout: eval mode


@functools.cache
def _slope_at_zero(kind: str, negative_slope: float, dtype: torch.dtype) -> float:
    """The activation's derivative at 0 as autograd takes it (relu's is 1 here)."""
    zero = torch.zeros((), dtype=dtype, requires_grad=True)
    with torch.enable_grad():
        node = Node("act", "act", kind=kind, slope=negative_slope)
        (slope,) = torch.autograd.grad(ACTIVATIONS[kind](node)(zero), zero)
    return float(slope)


def _injected(probe: FanOutProbe, node: Node, tensor: str, x_in: Tensor) -> Tensor:
    """d (op output, new channel) / d (this op's fan-in entries of one unit): (N, e, ...)."""
    n = len(x_in)
    if node.op == "conv" and tensor == "weight":  # x_in: the producer's im2col
        size = _net(probe).spec.shape(node.name)[1:]
        return x_in.reshape(n, x_in.shape[1], *size)  # (N, C_in * kh * kw, H, W)
    if node.op == "linear" and tensor == "weight":
        return x_in  # (N, F_in)
    shape = (n, 1, *_net(probe).spec.shape(node.name)[1:])
    if node.op == "norm" and tensor == "weight":  # the gain multiplies the normalised value
        mean = _new_entries(probe, node.name, "running_mean").reshape(())
        var = _new_entries(probe, node.name, "running_var").reshape(())
        value = -mean / (var + node.eps).sqrt()
        return torch.full(shape, float(value), dtype=x_in.dtype, device=x_in.device)
    return torch.ones(shape, dtype=x_in.dtype, device=x_in.device)  # a bias


def _stacked(probe: FanOutProbe, tangents: dict[Block, Tensor],
             blocks: list[Block]) -> Tensor:
    """The blocks' maps in fan-in order, zeros for blocks that do not reach here."""
    some = next(iter(tangents.values()))
    return torch.cat([tangents[b] if b in tangents
                      else some.new_zeros((some.shape[0], _block_size(probe, b),
                                           *some.shape[2:])) for b in blocks], dim=1)


def _consumer_rows(node: Node, weight: Tensor, maps: Tensor, grad_out: Tensor) -> Tensor:
    """M's rows of one consumer: (rows * entries per unit, D_in), in FanOutProbe's layout."""
    if node.op == "conv":  # (O, D_in, kh, kw) -> rows (o, tap)
        shape = (weight.shape[0], maps.shape[1], *weight.shape[2:])
        m = conv2d_weight(maps, shape, grad_out, node.stride, node.padding)
        return m.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
    per_unit = maps.reshape(maps.shape[0], maps.shape[1], -1)  # (N, D_in, features per unit)
    return torch.einsum("no,ndm->omd", grad_out, per_unit).reshape(-1, maps.shape[1])


def _block_size(probe: FanOutProbe, block: Block) -> int:
    """Entries of one unit in one fan-in parameter."""
    param = probe.params[f"ops.{block[0]}.{block[1]}"]
    return param[0].numel()
