"""Prune-and-transfer (ODF2NNA) for any graph network: unit statistics, scores, the choice
of units and the transfer (configured by netsize.prune.PruneConfig), with one unit = one
channel (or feature) of a growable group (every producer of a coupled group together, see
netsize.graph.groups).

A unit is measured where the ops that read it (the group's consumers) read it, in eval mode:
each consumer's input at the group's sites. After a flatten a channel is H*W features, its
positions; a coupled group may be read from several tensors (a residual stream before and after
an add): its statistics average over the distinct tensors read, so a unit is constant (std 0)
only when it is constant in every one of them.

Folding (fold_mean): a removed unit's mean, as each consumer reads it, goes into that consumer's
bias, bias += W[:, removed columns] @ mean. Exact for a constant unit read by a linear op; a
conv consumer sees the mean on every kernel tap, which is exact away from zero-padded borders
(everywhere when its padding is 0). A consumer without a bias cannot take a fold and is skipped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from netsize.errors import UserError
from netsize.graph.build import GraphNet
from netsize.graph.groups import Group, Site, find_groups, is_producer
from netsize.graph.spec import GraphSpec
from netsize.graph.surgery import narrow
from netsize.losses import per_example_loss
from netsize.surgery import IndexMap


@dataclass
class UnitStats:
    """One group's statistics, per unit: (units,) tensors (float64)."""

    mean: Tensor  # mean activation (over examples, positions and the distinct tensors read)
    std: Tensor  # sqrt of the mean over the tensors read of the activation's variance
    magnitude: Tensor  # mean |activation|
    taylor: Tensor  # |mean_n sum_(consumers, positions) a * dl/da|: first-order loss change
    fold: dict[str, list[Tensor]]  # consumer -> per site (column order) (units, mult) means


# ------------------------------------------------------------------------------ statistics
def unit_statistics(net: GraphNet, x: Tensor, y: Tensor, task: str,
                    groups: list[Group] | None = None,
                    chunk: int = 512) -> dict[str, UnitStats]:
    """Statistics of every group's units over the examples x (eval mode, chunked)."""
    groups = find_groups(net.spec) if groups is None else groups
    sums: dict[str, dict[str, Tensor]] = {g.name: {} for g in groups}
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(x), chunk):
            reads, grads = _probe(net, x[start:start + chunk], y[start:start + chunk], task)
            for group in groups:
                _accumulate(sums[group.name], group, net.spec, reads, grads)
    finally:
        net.train(was_training)
    return {g.name: _finish(sums[g.name], g, len(x)) for g in groups}


def _probe(net: GraphNet, x: Tensor, y: Tensor,
           task: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Every conv/linear op's input and d(summed loss)/d(that input through this op alone)."""
    spec = net.spec
    values = {"input": x.flatten(1) if len(spec.input_shape) == 1 else x}
    reads: dict[str, Tensor] = {}
    for node in spec.nodes:
        ins = [values[i] for i in node.inputs]
        if is_producer(node):  # a copy per reader: its gradient flows through this op only
            a = ins[0]
            reads[node.name] = a.clone() if a.requires_grad else a.detach().requires_grad_()
            ins = [reads[node.name]]
        values[node.name] = net._run(node, ins)
    total = per_example_loss(values[spec.output], y, task).sum()
    grads = torch.autograd.grad(total, list(reads.values()), allow_unused=True)
    return ({n: r.detach() for n, r in reads.items()},
            {n: torch.zeros_like(r) if g is None else g
             for (n, r), g in zip(reads.items(), grads, strict=True)})


def _entries(t: Tensor, site: Site, units: int) -> Tensor:
    """The group's entries of a consumer input: (N, C, H, W) or (N, F) -> (N, units, mult, S)."""
    part = t[:, site.offset:site.offset + units * site.mult].double()
    return part.reshape(len(t), units, site.mult, -1)


def _add(acc: dict[str, Tensor], key: str, value: Tensor) -> None:
    acc[key] = acc[key] + value if key in acc else value


def _accumulate(acc: dict[str, Tensor], group: Group, spec: GraphSpec,
                reads: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
    """Running sums: per consumer site (fold), per distinct tensor read, and taylor."""
    seen: set[tuple[str, int]] = set()
    for consumer, sites in group.columns:
        for k, site in enumerate(sites):
            a = _entries(reads[consumer], site, group.units)  # (n, units, mult, S)
            g = _entries(grads[consumer], site, group.units)
            _add(acc, f"fold:{consumer}:{k}", a.sum((0, 3)))  # (units, mult)
            _add(acc, f"count:{consumer}:{k}", torch.tensor(a.shape[0] * a.shape[3]))
            _add(acc, "taylor", (a * g).sum((0, 2, 3)))  # (units,)
            read = (spec.node(consumer).inputs[0], site.offset)
            if read not in seen:  # a tensor read by several consumers counts once
                seen.add(read)
                t = len(seen)  # sums of a - shift (a unit's first value): std 0 when constant
                shift = acc.setdefault(f"shift:{t}", a[0, :, 0, 0])  # (units,)
                d = a - shift[:, None, None]
                _add(acc, f"sum:{t}", d.sum((0, 2, 3)))
                _add(acc, f"square:{t}", d.pow(2).sum((0, 2, 3)))
                _add(acc, f"abs:{t}", a.abs().sum((0, 2, 3)))
                _add(acc, f"count:{t}", torch.tensor(a[:, 0].numel()))


def _finish(acc: dict[str, Tensor], group: Group, n: int) -> UnitStats:
    tensors = sum(1 for key in acc if key.startswith("sum:"))
    means, variances, absolute = [], [], []
    for t in range(1, tensors + 1):
        count = acc[f"count:{t}"]
        mean = acc[f"sum:{t}"] / count  # of a - shift
        means.append(acc[f"shift:{t}"] + mean)
        variances.append((acc[f"square:{t}"] / count - mean.pow(2)).clamp_min(0))
        absolute.append(acc[f"abs:{t}"] / count)
    fold = {c: [acc[f"fold:{c}:{k}"] / acc[f"count:{c}:{k}"] for k in range(len(sites))]
            for c, sites in group.columns}
    return UnitStats(torch.stack(means).mean(0), torch.stack(variances).mean(0).sqrt(),
                     torch.stack(absolute).mean(0), (acc["taylor"] / n).abs(), fold)


# ---------------------------------------------------------------------------------- choice
def unit_scores(stats: dict[str, UnitStats], criterion: str) -> dict[str, Tensor]:
    """Higher = more worth keeping. variability: std; cv: std/|mean|; magnitude: mean |a|;
    taylor: |first-order loss change| of removing the unit."""
    if criterion == "variability":
        return {name: s.std for name, s in stats.items()}
    if criterion == "cv":
        return {name: s.std / (s.mean.abs() + 1e-8) for name, s in stats.items()}
    if criterion == "magnitude":
        return {name: s.magnitude for name, s in stats.items()}
    if criterion == "taylor":
        return {name: s.taylor for name, s in stats.items()}
    raise ValueError(f"unknown criterion {criterion}")


def select_units(scores: dict[str, Tensor], epsilon: float, scope: str, min_units: int,
                 steps: dict[str, int] | None = None) -> dict[str, Tensor]:
    """Sorted indices kept per group: units scoring at least epsilon x the mean score of their
    group (scope layer) or of every unit (scope global); at least min_units, the best ones.
    A group with step s (group norms on the way) keeps or drops whole blocks of s units, ranked
    by their mean score (as many blocks as min_units needs)."""
    pooled = torch.cat(list(scores.values())).mean()
    keep = {}
    for name, s in scores.items():
        step = (steps or {}).get(name, 1)
        blocks = s.reshape(-1, step).mean(1)  # (units / step,): block scores
        threshold = epsilon * (s.mean() if scope == "layer" else pooled)
        kept = (blocks >= threshold).nonzero().squeeze(1)
        need = min(-(-min_units // step), len(blocks))  # ceil(min_units / step) blocks
        if len(kept) < need:
            kept = blocks.topk(need).indices.sort().values
        if len(kept) == 0:
            raise UserError(f"prune.epsilon {epsilon} removes every unit of group {name}; "
                            "lower prune.epsilon or set prune.min_units to 1 or more.")
        keep[name] = (kept.cpu()[:, None] * step + torch.arange(step)).flatten()
    return keep


# -------------------------------------------------------------------------------- transfer
def prune_and_transfer(net: GraphNet, stats: dict[str, UnitStats], criterion: str,
                       epsilon: float, scope: str, min_units: int,
                       fold_mean: bool) -> tuple[GraphSpec, GraphNet]:
    """The smaller dense network holding the surviving weights (not fine-tuned yet)."""
    steps = {g.name: g.step for g in find_groups(net.spec)}
    missing = sorted(set(stats) - set(steps))
    if missing:
        raise ValueError(f"stats: {', '.join(missing)} is not a group of this network")
    keep = select_units(unit_scores(stats, criterion), epsilon, scope, min_units,
                        {name: steps[name] for name in stats})
    return narrow_all(net, keep, stats if fold_mean else None)


def narrow_all(net: GraphNet, keep: dict[str, Tensor],
               fold: dict[str, UnitStats] | None = None) -> tuple[GraphSpec, GraphNet]:
    """Keep only the units keep[name] of every named group, one group after another (found
    again by name on the current spec); with `fold`, each removed unit's mean goes into its
    consumers' biases. A new network on net's device and dtype; net is not changed."""
    current = net
    for name, kept in keep.items():
        group = _find(current.spec, name)
        kept = torch.unique(torch.as_tensor(kept, dtype=torch.long).cpu())
        if len(kept) == group.units:
            continue
        _, smaller, index_map = narrow(current, group, kept)
        if fold is not None:
            with torch.no_grad():
                _fold(current, smaller, group, kept, fold[name], index_map)
        current = smaller
    if current is net:
        current = copy.deepcopy(net)
    return current.spec, current


def _find(spec: GraphSpec, name: str) -> Group:
    for group in find_groups(spec):
        if group.name == name:
            return group
    raise ValueError(f"keep: {name} is not a group of this network")


def _fold(old: GraphNet, new: GraphNet, group: Group, kept: Tensor, stats: UnitStats,
          index_map: IndexMap) -> None:
    """new consumer bias += old weight[kept rows][:, removed columns] @ their means."""
    removed = torch.ones(group.units, dtype=torch.bool)
    removed[kept] = False
    gone = removed.nonzero().squeeze(1)  # (r,)
    for consumer, sites in group.columns:
        bias = getattr(new.ops[consumer], "bias", None)
        if not isinstance(bias, Tensor):  # nowhere to put the mean: the fold is skipped
            continue
        weight = old.ops[consumer].weight
        assert isinstance(weight, Tensor)
        weight = weight.detach()  # (out, in[, kh, kw])
        rows = index_map[f"ops.{consumer}.weight"].index
        if rows and rows[0] is not None:  # the consumer is also a producer of this group
            weight = weight[rows[0].to(weight.device)]
        if weight.dim() == 4:  # a conv sees the (constant) mean on every tap
            weight = weight.sum(dim=(2, 3))  # (out, in)
        cols, means = [], []
        for site, mean in zip(sites, stats.fold[consumer], strict=True):  # mean: (units, m)
            cols.append((site.offset + gone[:, None] * site.mult
                         + torch.arange(site.mult)).flatten())  # (r * m,)
            means.append(mean[gone].flatten())
        index = torch.cat(cols).to(weight.device)
        bias += weight[:, index] @ torch.cat(means).to(weight)
