"""Index maps (netsize.surgery) on graph surgery: `remap` semantics, and optimizer state that
survives widen, deepen and narrow (docs/design.md, invariant 3): moments travel through the
index map, new entries start at zero, removed entries are dropped, learning rates are carried,
and nothing is shared with the old optimizer.

Expected moments come from plain slicing with the index map's kept positions, never from
`remap` itself."""

from __future__ import annotations

import copy
from typing import Any

import graphs
import pytest
import torch
from graphs import batch, make
from torch import Tensor, nn

from netsize.graph import grow
from netsize.graph.build import GraphNet
from netsize.graph.groups import Group, find_groups
from netsize.graph.surgery import deepen, narrow, widen
from netsize.losses import batch_loss
from netsize.recipe import TrainConfig
from netsize.surgery import IndexMap, carry_optimizer_state, remap
from netsize.train import make_optimizer

F64 = torch.float64


# ------------------------------------------------------------------------------------ remap
def test_remap_hand_made_two_dims() -> None:
    old = torch.tensor([[1.0, 2.0, 3.0],
                        [4.0, 5.0, 6.0]])
    rows = torch.tensor([1, -1, 0])
    cols = torch.tensor([2, -1, 0, 1])
    expected = torch.tensor([[6.0, 0.0, 4.0, 5.0],
                             [0.0, 0.0, 0.0, 0.0],
                             [3.0, 0.0, 1.0, 2.0]])
    got = remap(old, (rows, cols))
    assert torch.equal(got, expected)
    assert torch.equal(old, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))  # not mutated


def test_remap_none_dims_dtype_and_copies() -> None:
    old = torch.arange(24, dtype=F64).reshape(2, 3, 4)
    got = remap(old, (None, torch.tensor([-1, 2]), None))
    assert got.dtype == F64 and got.shape == (2, 2, 4)
    assert torch.count_nonzero(got[:, 0]) == 0
    assert torch.equal(got[:, 1], old[:, 2])
    same = remap(old, ())
    assert torch.equal(same, old) and same.data_ptr() != old.data_ptr()  # never old itself
    assert torch.equal(remap(old[0], (torch.tensor([-1, -1]), None)), torch.zeros(2, 4,
                                                                              dtype=F64))
    ints = torch.tensor([7, 8, 9])
    assert torch.equal(remap(ints, (torch.tensor([2, -1, -1, 0]),)), torch.tensor([9, 0, 0, 7]))
    # narrowing: dropped entries are gone, kept ones in the new order
    assert torch.equal(remap(old, (None, torch.tensor([2, 0]), None)), old[:, [2, 0]])


# ----------------------------------------------------------------------------------- helpers
FAMILIES = {  # network, the group widened or narrowed, the op a branch is inserted after
    "mlp": (graphs.mlp, "fc1", "act1"),
    "stage_cnn": (graphs.stage_cnn, "c2", "a2"),
    "resnet": (graphs.resnet, "stem", "a2"),  # coupled: stem, c2 and c4's residual stream
}
OPT_CFGS = {
    "sgd-momentum": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9),
    "sgd-nesterov": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    "adam": TrainConfig(optimizer="adam", lr=0.01),
    "adamw": TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.0),
}
MOMENT_KEYS = {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq"},
               "adamw": {"exp_avg", "exp_avg_sq"}}


def _data(net: GraphNet, n: int = 10) -> tuple[Tensor, Tensor]:
    x = batch(net.spec, n)
    return x, torch.randint(0, net.spec.n_outputs, (n,), generator=torch.Generator().manual_seed(4))


def _train_steps(net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
                 steps: int) -> None:
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        batch_loss(net(x), y, "classification").backward()
        opt.step()


def _group(net: GraphNet, name: str) -> Group:
    return next(g for g in find_groups(net.spec) if g.name == name)


def _kept(new: Tensor, index: tuple[Tensor | None, ...]) -> tuple[Tensor, Tensor]:
    """(the entries of `new` that come from old entries, a mask of the new entries)."""
    fresh = torch.zeros(new.shape, dtype=torch.bool)
    for dim, idx in enumerate(index):
        if idx is None:
            continue
        shape = [1] * new.dim()
        shape[dim] = len(idx)
        fresh |= (idx < 0).view(shape)
        new = new.index_select(dim, (idx >= 0).nonzero().squeeze(1))
    return new, fresh


def _old_part(old: Tensor, index: tuple[Tensor | None, ...]) -> Tensor:
    """The old entries in the new order (dropped ones left out)."""
    for dim, idx in enumerate(index):
        if idx is not None:
            old = old.index_select(dim, idx[idx >= 0])
    return old


def _surgery(net: GraphNet, family: str, surgery: str,
             data: tuple[Tensor, Tensor]) -> tuple[GraphNet, IndexMap]:
    _, group_name, after = FAMILIES[family]
    group = _group(net, group_name)
    if surgery == "widen-gradmax":  # zero fan-in, GradMax fan-out (netsize.graph.grow)
        _, new_net, index_map = grow.grow_width(net, group, 2, "gradmax", 0.5,
                                                (*data, "classification"),
                                                torch.Generator().manual_seed(0))
    elif surgery == "widen-raw":  # random fan-out, zero fan-in
        gen = torch.Generator().manual_seed(1)
        fan_out = {}
        for c in group.consumers:
            w = net.ops[c].weight
            cols = 2 * sum(s.mult for s in group.columns_of(c))
            fan_out[c] = torch.randn(w.shape[0], cols, *w.shape[2:], generator=gen, dtype=F64)
        _, new_net, index_map = widen(net, group, 2, fan_out)
    elif surgery == "deepen":
        torch.manual_seed(2)
        _, new_net, index_map = deepen(net, after)
    else:  # narrow: units 1 and the last but one go
        keep = [u for u in range(group.units) if u not in (1, group.units - 2)]
        _, new_net, index_map = narrow(net, group, torch.tensor(keep))
    return new_net, index_map


def _state_of(opt: torch.optim.Optimizer, p: Tensor) -> dict[str, Any]:
    return opt.state.get(p, {})


# --------------------------------------------------------------------------- carried state
@pytest.mark.parametrize("surgery", ["widen-gradmax", "widen-raw", "deepen", "narrow"])
@pytest.mark.parametrize("opt_name", list(OPT_CFGS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_optimizer_state_carried(family: str, opt_name: str, surgery: str) -> None:
    cfg = OPT_CFGS[opt_name]
    net = make(FAMILIES[family][0]())
    x, y = _data(net)
    opt = make_optimizer(net, cfg)
    _train_steps(net, opt, x, y, 3)
    opt.param_groups[0]["lr"] = 0.0123  # as if a scheduler had moved it
    new_net, index_map = _surgery(net, family, surgery, (x, y))
    new_opt = make_optimizer(new_net, cfg)
    old_state_before = copy.deepcopy(opt.state_dict())
    carry_optimizer_state(opt, net, new_opt, new_net, index_map)
    assert new_opt.param_groups[0]["lr"] == 0.0123

    old_params = dict(net.named_parameters())
    keys = MOMENT_KEYS[cfg.optimizer]
    carried, grown_entries, dropped = set(), 0, 0
    for pname, p in new_net.named_parameters():
        st = _state_of(new_opt, p)
        source = index_map[pname]
        if source.name is None:  # a brand-new tensor (the inserted branch) has no state
            assert surgery == "deepen" and not st, pname
            continue
        old_p = old_params[source.name]
        old_st = _state_of(opt, old_p)
        assert set(st) == set(old_st) and keys <= set(st), pname
        for key in keys:
            assert st[key].shape == p.shape, (pname, key)
            assert st[key].data_ptr() != old_st[key].data_ptr()  # a copy, not the old tensor
            kept, fresh = _kept(st[key], source.index)
            assert torch.equal(kept, _old_part(old_st[key], source.index)), (pname, key)
            assert torch.count_nonzero(st[key][fresh]) == 0, (pname, key)  # new entries: 0
            grown_entries += int(fresh.sum())
            dropped += old_st[key].numel() - kept.numel()
        if "step" in st:
            assert float(st["step"]) == 3.0
        carried.add(source.name)
    assert carried == set(old_params)  # every old parameter's state went somewhere
    assert (grown_entries > 0) == surgery.startswith("widen")  # the test can fail
    assert (dropped > 0) == (surgery == "narrow")
    # the old optimizer is left alone
    after_state = opt.state_dict()
    for idx, st in old_state_before["state"].items():
        for key, value in st.items():
            assert torch.equal(after_state["state"][idx][key], value)

    if surgery == "narrow":  # the function changed: only check that training goes on
        _train_steps(new_net, new_opt, x, y, 1)
        assert all(torch.isfinite(p).all() for p in new_net.parameters())
        return
    # One more step on both: the new units (or branch) output zero, so the old parameters get
    # the same gradients and, with carried moments, exactly the same update as in the old
    # network. (The old pair is stepped as a deep copy: see test_carried_state_is_not_shared.)
    ref_net, ref_opt = copy.deepcopy((net, opt))
    _train_steps(ref_net, ref_opt, x, y, 1)
    _train_steps(new_net, new_opt, x, y, 1)
    ref_params = dict(ref_net.named_parameters())
    for pname, p in new_net.named_parameters():
        assert torch.isfinite(p).all(), pname
        source = index_map[pname]
        if source.name is None:
            continue
        got, _ = _kept(p.detach(), source.index)
        torch.testing.assert_close(got, ref_params[source.name].detach(), atol=1e-9, rtol=1e-9,
                                   msg=pname)


@pytest.mark.parametrize("opt_name", ["sgd-momentum", "adam"])
def test_carried_state_is_not_shared(opt_name: str) -> None:
    cfg = OPT_CFGS[opt_name]
    net = make(graphs.mlp())
    x, y = _data(net)
    opt = make_optimizer(net, cfg)
    _train_steps(net, opt, x, y, 2)
    new_net, index_map = _surgery(net, "mlp", "widen-raw", (x, y))
    new_opt = make_optimizer(new_net, cfg)
    carry_optimizer_state(opt, net, new_opt, new_net, index_map)
    before = copy.deepcopy(opt.state_dict())
    _train_steps(new_net, new_opt, x, y, 1)  # stepping the new optimizer ...
    after = opt.state_dict()
    for idx, st in before["state"].items():  # ... must leave the old one as it was
        for key, value in st.items():
            assert torch.equal(after["state"][idx][key], value), (idx, key)


def test_initial_lr_of_a_scheduled_optimizer_is_carried() -> None:
    net = make(graphs.stage_cnn())
    x, y = _data(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        _train_steps(net, opt, x, y, 1)
        sched.step()
    new_net, index_map = _surgery(net, "stage_cnn", "widen-raw", (x, y))
    new_opt = torch.optim.SGD(new_net.parameters(), lr=0.1, momentum=0.9)
    carry_optimizer_state(opt, net, new_opt, new_net, index_map)
    assert new_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"] < 0.1
    assert new_opt.param_groups[0]["initial_lr"] == 0.1
