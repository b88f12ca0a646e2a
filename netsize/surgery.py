"""Surgery: width and depth changes that return a new spec, a new module and an index map.

The index map says, for every parameter and buffer of the new module, which tensor of the old
module it comes from and, per dimension, which old index each new index takes (-1: new entry).
The same map moves optimizer moments (see `carry_optimizer_state`). Nothing here mutates the
module it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from netsize.model import Net, build, running_stats
from netsize.spec import LayerSpec, NetSpec


@dataclass(frozen=True)
class Source:
    name: str | None  # old tensor name, or None for a brand-new tensor
    index: tuple[torch.Tensor | None, ...] = ()  # per dim: old index per new index, -1 = new


IndexMap = dict[str, Source]


def remap(old: torch.Tensor, index: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """Gather `old` into a new tensor (never `old` itself); positions whose index is -1 are 0."""
    out = old.clone()
    for dim, idx in enumerate(index):
        if idx is None:
            continue
        idx = idx.to(out.device)
        shape = list(out.shape)
        shape[dim] = len(idx)
        fresh = torch.zeros(shape, dtype=out.dtype, device=out.device)
        keep = (idx >= 0).nonzero().squeeze(1)
        fresh.index_copy_(dim, keep, out.index_select(dim, idx[keep]))
        out = fresh
    return out


def _grown_index(old_size: int, added: int) -> torch.Tensor:
    return torch.cat([torch.arange(old_size), torch.full((added,), -1)])


def _op_names(spec: NetSpec, i: int) -> str:
    return "head" if i == len(spec.layers) else f"hidden.{i}.op"


def _tensor_names(spec: NetSpec) -> list[str]:
    with torch.device("meta"):  # names only: no memory, no draw from the global RNG
        return list(build(spec).state_dict())


def _copy_into(new_net: Net, old_state: dict[str, torch.Tensor], index_map: IndexMap) -> None:
    """Fill new_net's tensors from old_state through the index map (fresh tensors keep init)."""
    new_state = new_net.state_dict()
    with torch.no_grad():
        for name, source in index_map.items():
            if source.name is None:
                continue
            new_state[name].copy_(remap(old_state[source.name], source.index))


def widen(
    net: Net, layer: int, fan_out: torch.Tensor, fan_in: torch.Tensor | None = None
) -> tuple[NetSpec, Net, IndexMap]:
    """Add k units to hidden layer `layer`.

    fan_out: (d_next, k) for a linear next op, (d_next, k, kh, kw) for a conv next op.
    fan_in: None for zero fan-in (GradMax); else (k, d_in) or (k, C_in, kh, kw).
    New biases are 0; new BatchNorm channels get gamma=1, beta=0, mean=0, var=1.
    """
    spec = net.spec
    k = fan_out.shape[1]
    old_width = spec.layers[layer].width
    layers = list(spec.layers)
    layers[layer] = LayerSpec(old_width + k, *_rest(layers[layer]))
    new_spec = spec.with_layers(tuple(layers))

    grown = _grown_index(old_width, k)
    index_map = {name: Source(name) for name in _tensor_names(new_spec)}
    op = f"hidden.{layer}.op"
    index_map[f"{op}.weight"] = Source(f"{op}.weight", (grown,))
    index_map[f"{op}.bias"] = Source(f"{op}.bias", (grown,))
    if spec.layers[layer].norm:
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            name = f"hidden.{layer}.norm.{tensor}"
            index_map[name] = Source(name, (grown,))
    nxt = _op_names(spec, layer + 1)
    index_map[f"{nxt}.weight"] = Source(f"{nxt}.weight", (None, grown))

    new_net = _assemble(net, new_spec, index_map)
    with torch.no_grad():
        weight_in = new_net.layer(layer).op.weight
        weight_in[old_width:] = 0.0 if fan_in is None else fan_in.to(weight_in)
        new_next = new_net.next_op(layer)
        new_next.weight[:, old_width:] = fan_out.to(new_next.weight)
        if spec.layers[layer].norm:
            norm = new_net.batch_norm(layer)
            norm.weight[old_width:] = 1.0
            running_stats(norm)[1][old_width:] = 1.0
    return new_spec, new_net, index_map


def deepen(net: Net, after: int) -> tuple[NetSpec, Net, IndexMap]:
    """Insert an identity layer right after hidden layer `after` (before any pooling).

    Exact in train and eval mode: its input is a ReLU output (>= 0), its op is the identity
    (for a conv, only the centre tap holds the identity matrix), and no batch norm follows it.
    """
    spec = net.spec
    if spec.activation != "relu":
        raise ValueError("depth growth needs relu activations")
    width = spec.layers[after].width
    new_layer = LayerSpec(width, norm=False, stage=spec.layers[after].stage, dropout=False)
    layers = spec.layers[: after + 1] + (new_layer,) + spec.layers[after + 1 :]
    new_spec = spec.with_layers(layers)

    index_map: IndexMap = {}
    for name in _tensor_names(new_spec):
        index_map[name] = Source(_shift_name(name, after))
    new_net = _assemble(net, new_spec, index_map)
    with torch.no_grad():
        op = new_net.layer(after + 1).op
        assert op.bias is not None
        op.weight.zero_()
        op.bias.zero_()
        eye = torch.eye(width, dtype=op.weight.dtype, device=op.weight.device)
        if spec.kind == "mlp":
            op.weight.copy_(eye)
        else:
            c = spec.kernel_size // 2
            op.weight[:, :, c, c] = eye
    return new_spec, new_net, index_map


def _rest(layer: LayerSpec) -> tuple[bool, int, bool]:
    return layer.norm, layer.stage, layer.dropout


def _shift_name(name: str, after: int) -> str | None:
    """Old name of a tensor in the deepened net; None for the inserted layer's tensors."""
    if not name.startswith("hidden."):
        return name
    _, idx, rest = name.split(".", 2)
    i = int(idx)
    if i <= after:
        return name
    if i == after + 1:
        return None
    return f"hidden.{i - 1}.{rest}"


def _assemble(net: Net, new_spec: NetSpec, index_map: IndexMap) -> Net:
    """A new Net on net's device/dtype, filled from net through the index map."""
    param = next(net.parameters())
    with torch.device("meta"):
        new_net = build(new_spec)
    # Every tensor is either copied here or set explicitly by the caller, so no init is needed.
    new_net = new_net.to_empty(device=param.device).to(dtype=param.dtype)
    new_net.train(net.training)
    _copy_into(new_net, net.state_dict(), index_map)
    return new_net


def carry_optimizer_state(
    old_opt: torch.optim.Optimizer,
    old_net: nn.Module,
    new_opt: torch.optim.Optimizer,
    new_net: nn.Module,
    index_map: IndexMap,
) -> None:
    """Move per-parameter state (momentum, Adam moments, step) through the index map.

    Old entries keep their moments, new entries start at zero, removed entries are dropped.
    Learning rates of the parameter groups are carried too (a scheduler may have changed them).
    """
    old_params = dict(old_net.named_parameters())
    for new_group, old_group in zip(new_opt.param_groups, old_opt.param_groups, strict=True):
        for key in ("lr", "initial_lr"):
            if key in old_group:
                new_group[key] = old_group[key]
    for name, new_param in new_net.named_parameters():
        source = index_map.get(name)
        if source is None or source.name is None or source.name not in old_params:
            continue
        old_state = old_opt.state.get(old_params[source.name])
        if not old_state:
            continue
        new_state = {}
        for key, value in old_state.items():
            if torch.is_tensor(value) and value.shape == old_params[source.name].shape:
                new_state[key] = remap(value, source.index).to(new_param.device)
            else:
                new_state[key] = value.clone() if torch.is_tensor(value) else value
        new_opt.state[new_param] = new_state


def narrow(net: Net, keep: list[torch.Tensor],
           fold_means: list[torch.Tensor] | None = None) -> tuple[NetSpec, Net, IndexMap]:
    """Keep only the units `keep[i]` (sorted indices) of every hidden layer i.

    Kept rows of each op (and batch-norm entries) and the matching columns of the op that reads
    them are copied. With fold_means (each layer's mean activation per unit, measured in eval
    mode), a removed unit's mean is folded into the next op's bias: exact for a unit that was
    constant, except at the zero-padded borders when the next op is a conv.
    """
    spec = net.spec
    layers = tuple(LayerSpec(len(k), *_rest(layer)) for k, layer in zip(keep, spec.layers,
                                                                        strict=True))
    new_spec = spec.with_layers(layers)
    index_map: IndexMap = {name: Source(name) for name in _tensor_names(new_spec)}
    for i, rows in enumerate(keep):
        cols = keep[i - 1] if i > 0 else None
        index_map[f"hidden.{i}.op.weight"] = Source(f"hidden.{i}.op.weight", (rows, cols))
        index_map[f"hidden.{i}.op.bias"] = Source(f"hidden.{i}.op.bias", (rows,))
        if spec.layers[i].norm:
            for tensor in ("weight", "bias", "running_mean", "running_var"):
                name = f"hidden.{i}.norm.{tensor}"
                index_map[name] = Source(name, (rows,))
    index_map["head.weight"] = Source("head.weight", (None, keep[-1]))
    new_net = _assemble(net, new_spec, index_map)
    if fold_means is not None:
        with torch.no_grad():
            for i, rows in enumerate(keep):
                next_rows = keep[i + 1] if i + 1 < len(keep) else None
                _fold_removed(net, new_net, i, rows, next_rows, fold_means[i])
    return new_spec, new_net, index_map


def _fold_removed(old: Net, new: Net, layer: int, kept: torch.Tensor,
                  next_rows: torch.Tensor | None, means: torch.Tensor) -> None:
    """new next-op bias += (old next-op weight on removed units) @ (their mean activation)."""
    removed = torch.ones(len(means), dtype=torch.bool)
    removed[kept.cpu()] = False
    if not removed.any():
        return
    weight = old.next_op(layer).weight.detach()
    if next_rows is not None:  # the next layer is being narrowed too
        weight = weight[next_rows.to(weight.device)]
    weight = weight[:, removed.to(weight.device)]  # (d_next, r[, kh, kw])
    if weight.dim() == 4:  # a conv sees the constant on every tap
        weight = weight.sum(dim=(2, 3))
    bias = new.next_op(layer).bias
    assert bias is not None
    bias += weight @ means[removed.to(means.device)].to(weight)
