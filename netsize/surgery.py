"""Index maps: how a network changed by surgery relates to the one before, tensor by tensor.

For every parameter and buffer of the new module, an index map names the tensor of the old
module it comes from (None: a brand-new tensor) and, per dimension, the old index each new index
takes (-1: a new entry). Graph surgery (netsize.graph.surgery: widen, narrow, deepen) returns
one; `remap` moves a tensor through it, and `carry_optimizer_state` moves the optimizer's
moments the same way when the trainer swaps in a grown network. Nothing here mutates its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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
