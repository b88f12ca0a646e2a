"""Surgery on graph networks: widen a group, narrow a group, deepen with a zero residual branch.

Each returns a new GraphSpec, a new GraphNet (same device, dtype and train/eval mode) and an
index map in netsize.surgery's format: for every tensor of the new net, the old tensor it comes
from and, per dimension, the old index of every new index (-1: new entry), so
`carry_optimizer_state` moves optimizer moments the same way. The given net is never changed.

Tensor layouts (PyTorch): conv weight (out, in, kh, kw), depthwise (C, 1, kh, kw), linear
(out, in); biases and norm tensors (C,).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from math import gcd

import torch
from torch import Tensor, nn

from netsize.graph.build import GraphNet, build_graph, make_module
from netsize.graph.groups import Group, Sites, find_groups, resize
from netsize.graph.ops import GATES
from netsize.graph.spec import GraphSpec, Node
from netsize.surgery import IndexMap, Source, remap

MakeIndex = Callable[[int, Sites], Tensor]  # (old size, sites) -> new-to-old index


# ----------------------------------------------------------------------------------- widen
def widen(net: GraphNet, group: Group, k: int, fan_out: dict[str, Tensor],
          fan_in: dict[str, Tensor] | None = None) -> tuple[GraphSpec, GraphNet, IndexMap]:
    """Add k units to every segment of the group.

    fan_out[consumer]: (out, k * m[, kh, kw]) in the consumer's layout, m the sum of the
    multiplicities of its sites (H*W after a flatten), columns in site order, each new unit's
    entries together (channel-major); a consumer not in fan_out gets zero columns.
    fan_in[producer]: (k * s, in[, kh, kw]) with s its number of segments (1 but for producers
    cut by a concat feeding an add); None or a missing producer: zero rows (GradMax).
    A producer that also reads the group gets zeros where new rows meet new columns.
    New biases are 0; new batch-norm channels gamma 1, beta 0, mean 0, var 1; group norms gain
    whole groups (gamma 1, beta 0); depthwise convs pass new channels through (centre tap 1).
    """
    spec = net.spec
    _check_current(spec, group)
    if k < 1 or k % group.step:
        raise ValueError(f"{group.name}: k must be a positive multiple of {group.step} "
                         "(group norms on the way grow by whole groups)")
    _check_names(fan_out, group.consumers, "fan_out", "consumer")
    _check_names(fan_in or {}, group.producers, "fan_in", "producer")
    rows, cols = _indices(spec, group, lambda size, sites: _grown(size, sites, group.units, k))
    new_spec = resize(spec, group, group.units + k)
    index_map = _index_map(new_spec, rows, cols)
    new_net = _assemble(net, new_spec, index_map)
    with torch.no_grad():
        _start_channels(new_net, group, rows)
        for name, value in (fan_in or {}).items():  # new rows x old columns
            _put(new_net, name, rows[name] < 0, _old(cols.get(name)), value, "fan_in")
        for name, value in fan_out.items():  # old rows x new columns
            _put(new_net, name, _old(rows.get(name)), cols[name] < 0, value, "fan_out")
    return new_spec, new_net, index_map


def _grown(size: int, sites: Sites, units: int, k: int) -> Tensor:
    """(size + k * sum(mult),): k * mult new entries (-1) after each site's units."""
    parts, start = [], 0
    for site in sites:  # sorted by offset
        end = site.offset + units * site.mult
        parts += [torch.arange(start, end), torch.full((k * site.mult,), -1)]
        start = end
    parts.append(torch.arange(start, size))
    return torch.cat(parts)


def _start_channels(new_net: GraphNet, group: Group, rows: dict[str, Tensor]) -> None:
    """New channels of norms (gamma 1, running var 1) and depthwise convs (centre tap 1)."""
    for name in group.path:
        if name not in rows:
            continue
        new = (rows[name] < 0).nonzero().squeeze(1).to(_tensor(new_net, name, "weight").device)
        module = new_net.ops[name]
        if isinstance(module, nn.Conv2d):  # depthwise: weight (C, 1, kh, kw)
            module.weight[new, 0, module.kernel_size[0] // 2, module.kernel_size[1] // 2] = 1.0
            continue
        _tensor(new_net, name, "weight")[new] = 1.0
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            _tensor(new_net, name, "running_var")[new] = 1.0


def _tensor(net: GraphNet, name: str, tensor: str) -> Tensor:
    """A tensor of op `name` (weight, bias, running_var, ...)."""
    value = getattr(net.ops[name], tensor)
    assert isinstance(value, Tensor)
    return value


def _old(index: Tensor | None) -> Tensor | None:
    return None if index is None else index >= 0


def _put(new_net: GraphNet, name: str, rows: Tensor | None, cols: Tensor | None,
         value: Tensor, what: str) -> None:
    """weight[rows, cols] = value; rows/cols are masks (None: all)."""
    weight = _tensor(new_net, name, "weight")  # (out, in[, kh, kw])
    r = torch.arange(weight.shape[0]) if rows is None else rows.nonzero().squeeze(1)
    c = torch.arange(weight.shape[1]) if cols is None else cols.nonzero().squeeze(1)
    shape = (len(r), len(c), *weight.shape[2:])
    if tuple(value.shape) != shape:
        raise ValueError(f"{what}[{name}]: expected shape {shape}, got {tuple(value.shape)}")
    r, c = r.to(weight.device), c.to(weight.device)
    weight[r[:, None], c[None, :]] = value.to(weight)


def _check_names(values: dict[str, Tensor], allowed: tuple[str, ...], what: str,
                 role: str) -> None:
    extra = sorted(set(values) - set(allowed))
    if extra:
        raise ValueError(f"{what}: {', '.join(extra)} is not a {role} of this group")


def _check_current(spec: GraphSpec, group: Group) -> None:
    if group not in find_groups(spec):
        raise ValueError(f"{group.name}: not a growable group of this network "
                         "(find the groups again after each surgery)")


# ---------------------------------------------------------------------------------- narrow
def narrow(net: GraphNet, group: Group, keep: Tensor) -> tuple[GraphSpec, GraphNet, IndexMap]:
    """Keep only the units `keep` (indices in 0..units-1) of every segment of the group: their
    rows, columns, norm entries and depthwise filters (the inverse of widen)."""
    spec = net.spec
    _check_current(spec, group)
    keep = torch.unique(torch.as_tensor(keep, dtype=torch.long).cpu())  # sorted
    if len(keep) == 0 or keep[0] < 0 or keep[-1] >= group.units:
        raise ValueError(f"{group.name}: keep 1 to {group.units} units from 0..{group.units - 1}")
    rows, cols = _indices(spec, group, lambda size, sites: _kept(size, sites, group.units, keep))
    _check_whole_groups(spec, group, rows)
    new_spec = resize(spec, group, len(keep))
    index_map = _index_map(new_spec, rows, cols)
    return new_spec, _assemble(net, new_spec, index_map), index_map


def _kept(size: int, sites: Sites, units: int, keep: Tensor) -> Tensor:
    """Old indices that stay: all outside the group, the kept units' entries inside."""
    mask = torch.ones(size, dtype=torch.bool)
    kept = torch.zeros(units, dtype=torch.bool)
    kept[keep] = True
    for site in sites:
        mask[site.offset: site.offset + units * site.mult] = kept.repeat_interleave(site.mult)
    return mask.nonzero().squeeze(1)


def _check_whole_groups(spec: GraphSpec, group: Group, rows: dict[str, Tensor]) -> None:
    for name in group.path:
        node = spec.node(name)
        if node.op == "norm" and node.kind == "group":
            kept = torch.zeros(spec.shape(name)[0], dtype=torch.bool)
            kept[rows[name]] = True
            per_group = kept.view(node.groups, -1)  # (groups, channels per group)
            if not (per_group.all(1) | ~per_group.any(1)).all():
                raise ValueError(f"{name}: a group norm loses whole groups only")


# ------------------------------------------------------------------------------ index maps
def _indices(spec: GraphSpec, group: Group,
             make: MakeIndex) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per op, the new-to-old index of its output channels (rows: producers, norms and
    depthwise convs on the path) and of its input channels (cols: consumers)."""
    rows = {p: make(spec.node(p).width, group.sites_of(p)) for p in group.producers}
    for name in group.path:
        if spec.node(name).op in ("norm", "conv"):
            rows[name] = make(spec.shape(name)[0], group.sites_of(name))
    cols = {c: make(spec.in_channels(spec.node(c)), group.columns_of(c))
            for c in group.consumers}
    return rows, cols


def _index_map(new_spec: GraphSpec, rows: dict[str, Tensor],
               cols: dict[str, Tensor]) -> IndexMap:
    index_map: IndexMap = {}
    for name in _tensor_names(new_spec):
        _, node, tensor = name.split(".", 2)  # ops.<node>.<tensor>
        index: tuple[Tensor | None, ...] = ()
        if tensor == "weight" and node in cols:
            index = (rows.get(node), cols[node])
        elif tensor != "num_batches_tracked" and node in rows:
            index = (rows[node],)
        index_map[name] = Source(name, index)
    return index_map


@functools.lru_cache(maxsize=256)  # a check widens the same network once per candidate
def _tensor_names(spec: GraphSpec) -> tuple[str, ...]:
    with torch.device("meta"):  # names only: no memory, no draw from the global RNG
        return tuple(build_graph(spec).state_dict())


def _assemble(net: GraphNet, new_spec: GraphSpec, index_map: IndexMap) -> GraphNet:
    """A new GraphNet on net's device and dtype, filled from net through the index map
    (tensors with no source are left for the caller to set)."""
    ref = next((t for t in net.state_dict().values() if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    with torch.device("meta"):
        new_net = build_graph(new_spec)
    new_net = new_net.to_empty(device=device).to(dtype=dtype)
    new_net.train(net.training)
    old, new = net.state_dict(), new_net.state_dict()
    with torch.no_grad():
        for name, source in index_map.items():
            if source.name is not None:
                new[name].copy_(remap(old[source.name], source.index))
    return new_net


# ---------------------------------------------------------------------------------- deepen
def deepen(net: GraphNet, after: str,
           kind: str = "residual") -> tuple[GraphSpec, GraphNet, IndexMap]:
    """Insert a residual branch after op `after`; its readers read the branch's add.

    kind residual: add(after, act(norm(op(after)))); kind block: a basic residual block,
    add(after, norm(op(act(norm(op(after)))))). op: conv 3x3 (padding 1, no bias) on images,
    linear (no bias) on features, as wide as `after`. The last norm (the network's kind, batch
    or group) starts at gamma 0 and beta 0, so the branch is 0 in train and eval mode (and
    act(0) = 0 for every activation it copies); the ops get PyTorch's default init from the
    global RNG. Without a norm in the network, the last op's weight is 0 instead.
    """
    spec = net.spec
    if kind not in ("residual", "block"):
        raise ValueError(f"deepen: kind must be residual or block, got {kind!r}")
    if after == spec.output or after not in {n.name for n in spec.nodes}:
        raise ValueError(f"deepen: {after!r} is not an op before the output")
    branch = _branch(spec, after, kind == "block")
    new_spec = spec.insert_after(after, branch, rewire=branch[-1].name)
    fresh = {n.name for n in branch}
    index_map = {name: Source(None if name.split(".")[1] in fresh else name)
                 for name in _tensor_names(new_spec)}
    new_net = _assemble(net, new_spec, index_map)
    with torch.no_grad():
        _start_branch(new_net, new_spec, branch)
    return new_spec, new_net, index_map


def _branch(spec: GraphSpec, after: str, block: bool) -> tuple[Node, ...]:
    shape = spec.shape(after)
    c, image, p = shape[0], len(shape) == 3, _prefix(spec)
    norm, act = _like(spec, after, "norm", image), _like(spec, after, "act", image)
    nodes: list[Node] = []
    for i in (1, 2) if block else (0,):
        part = f"{p}_{'conv' if image else 'fc'}{i or ''}"
        x = nodes[-1].name if nodes else after
        nodes.append(Node(part, "conv", (x,), width=c, kernel=3, padding=1, bias=False)
                     if image else Node(part, "linear", (x,), width=c, bias=False))
        if norm is not None:
            per_group = spec.shape(norm.name)[0] // norm.groups
            groups = c // gcd(per_group, c) if norm.kind == "group" else 1
            nodes.append(Node(f"{p}_norm{i or ''}", "norm", (part,), kind=norm.kind,
                              groups=groups, eps=norm.eps, momentum=norm.momentum))
        if act is not None and i != 2:  # a block's last norm goes into the sum as it is
            nodes.append(Node(f"{p}_act{i or ''}", "act", (nodes[-1].name,), kind=act.kind,
                              slope=act.slope))
    nodes.append(Node(f"{p}_add", "add", (after, nodes[-1].name)))
    return tuple(nodes)


def _prefix(spec: GraphSpec) -> str:
    names = {n.name for n in spec.nodes}
    i = 1
    while any(n.startswith(f"res{i}_") for n in names):
        i += 1
    return f"res{i}"


def _like(spec: GraphSpec, after: str, op: str, image: bool) -> Node | None:
    """The network's op of this kind to copy: the last one up to `after` (one on images when
    `after` is an image, on features otherwise, if any), else the first one."""
    found = [n for n in spec.nodes if n.op == op and n.kind not in GATES]  # branch: act(0) = 0
    same = [n for n in found if (len(spec.shape(n.name)) == 3) == image]
    found = same or found
    order = [n.name for n in spec.nodes]
    before = [n for n in found if order.index(n.name) <= order.index(after)]
    return before[-1] if before else (found[0] if found else None)


def _start_branch(new_net: GraphNet, new_spec: GraphSpec, branch: tuple[Node, ...]) -> None:
    """Default init for the branch's ops; its last norm (else its last op) starts at 0."""
    ops = [n for n in branch if n.op in ("conv", "linear")]
    norms = [n for n in branch if n.op == "norm"]
    for op in ops if norms else ops[:-1]:
        with torch.device("cpu"):  # default init, drawn on the CPU: a seed gives one draw anywhere
            fresh = make_module(new_spec, op)
        assert fresh is not None and isinstance(fresh.weight, Tensor)
        _tensor(new_net, op.name, "weight").copy_(fresh.weight)
    if not norms:
        _tensor(new_net, ops[-1].name, "weight").zero_()
        return
    for norm in norms:  # a fresh norm; the last one's gamma 0 makes the branch 0
        gamma = 0 if norm is norms[-1] else 1
        for tensor, value in (("weight", gamma), ("bias", 0), ("running_mean", 0),
                              ("running_var", 1), ("num_batches_tracked", 0)):
            if hasattr(new_net.ops[norm.name], tensor):  # batch norm has the running stats
                _tensor(new_net, norm.name, tensor).fill_(value)
