"""Optimizer state survives surgery (docs/design.md, invariant 3): moments travel through the
index map, new entries start at zero, removed entries are dropped, and nothing is shared with the
old optimizer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from nets import batch, cnn, make_net, mlp, next_weight

from netsize import growth
from netsize.losses import batch_loss
from netsize.model import Net
from netsize.recipe import TrainConfig
from netsize.surgery import carry_optimizer_state, deepen, widen
from netsize.train import make_optimizer

SPECS = {  # the same networks as in test_surgery.py
    "mlp-relu-bn-3": mlp([5, 4, 3], "relu", norm=True),
    # routes: direct, maxpool, maxpool, avgpool (8 -> 4 -> 2)
    "cnn-relu-bn-8": cnn([[3, 4], [3], [2]], (2, 8, 8), "relu", norm=True),
}


def _train_steps(net: Net, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 steps: int) -> None:
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        batch_loss(net(x), y, "classification").backward()
        opt.step()


def _old_part_width(name: str, t: torch.Tensor, layer: int, w: int, last: bool) -> torch.Tensor:
    """The old entries of a tensor of the widened net (new ones come at the end)."""
    grown_rows = {f"hidden.{layer}.op.weight", f"hidden.{layer}.op.bias",
                  f"hidden.{layer}.norm.weight", f"hidden.{layer}.norm.bias"}
    nxt = "head.weight" if last else f"hidden.{layer + 1}.op.weight"
    if name in grown_rows:
        return t[:w]
    if name == nxt:
        return t[:, :w]
    return t


def _new_part_width(name: str, t: torch.Tensor, layer: int, w: int,
                    last: bool) -> torch.Tensor | None:
    grown_rows = {f"hidden.{layer}.op.weight", f"hidden.{layer}.op.bias",
                  f"hidden.{layer}.norm.weight", f"hidden.{layer}.norm.bias"}
    nxt = "head.weight" if last else f"hidden.{layer + 1}.op.weight"
    if name in grown_rows:
        return t[w:]
    if name == nxt:
        return t[:, w:]
    return None


def _old_name_depth(name: str, after: int) -> str | None:
    if not name.startswith("hidden."):
        return name
    _, i, rest = name.split(".", 2)
    i_new = int(i)
    if i_new <= after:
        return name
    if i_new == after + 1:
        return None
    return f"hidden.{i_new - 1}.{rest}"


OPT_CFGS = {
    "sgd-momentum": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9),
    "sgd-nesterov": TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    "adam": TrainConfig(optimizer="adam", lr=0.01),
    "adamw": TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.0),
}
MOMENT_KEYS = {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq"},
               "adamw": {"exp_avg", "exp_avg_sq"}}


def _state_of(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, Any]:
    return opt.state.get(p, {})


@pytest.mark.parametrize("surgery", ["widen-gradmax", "widen-raw", "deepen"])
@pytest.mark.parametrize("opt_name", list(OPT_CFGS))
@pytest.mark.parametrize("name", ["mlp-relu-bn-3", "cnn-relu-bn-8"])
def test_optimizer_state_carried(name: str, opt_name: str, surgery: str) -> None:
    spec = SPECS[name]
    cfg = OPT_CFGS[opt_name]
    net = make_net(spec)
    x, y = batch(spec, n=10)
    opt = make_optimizer(net, cfg)
    _train_steps(net, opt, x, y, 3)
    opt.param_groups[0]["lr"] = 0.0123  # as if a scheduler had moved it
    layer = 1
    w = spec.layers[layer].width
    last = layer == len(spec.layers) - 1
    if surgery == "widen-gradmax":
        gen = torch.Generator().manual_seed(0)
        _, new_net, index_map = growth.expand_width(net, layer, 2, "gradmax", 0.5,
                                                    (x, y, "classification"), gen)
    elif surgery == "widen-raw":
        nxt = next_weight(net, layer)
        fan_out = torch.randn(nxt.shape[0], 2, *nxt.shape[2:], dtype=torch.float64)
        _, new_net, index_map = widen(net, layer, fan_out)
    else:
        _, new_net, index_map = deepen(net, layer)
    new_opt = make_optimizer(new_net, cfg)
    old_state_before = copy.deepcopy(opt.state_dict())
    carry_optimizer_state(opt, net, new_opt, new_net, index_map)
    assert new_opt.param_groups[0]["lr"] == 0.0123

    old_params = dict(net.named_parameters())
    keys = MOMENT_KEYS[cfg.optimizer]
    n_carried = 0
    for pname, p in new_net.named_parameters():
        st = _state_of(new_opt, p)
        if surgery == "deepen":
            old_name = _old_name_depth(pname, layer)
            assert index_map[pname].name == old_name
            if old_name is None:  # the inserted layer has no state
                assert not st, pname
                continue
            old_st = _state_of(opt, old_params[old_name])
            assert set(st) == set(old_st)
            for key in keys:
                assert torch.equal(st[key], old_st[key]), (pname, key)
        else:
            old_st = _state_of(opt, old_params[pname])
            assert set(st) == set(old_st), pname
            for key in keys:
                assert st[key].shape == p.shape, (pname, key)
                old_part = _old_part_width(pname, st[key], layer, w, last)
                assert torch.equal(old_part, old_st[key]), (pname, key)
                new_part = _new_part_width(pname, st[key], layer, w, last)
                if new_part is not None:
                    assert new_part.numel() > 0 and torch.count_nonzero(new_part) == 0
        if "step" in st:
            assert float(st["step"]) == 3.0
        assert keys <= set(st)
        n_carried += 1
    assert n_carried == len(old_params)
    if surgery == "deepen":  # hidden.2 -> hidden.3 explicitly
        old_st = _state_of(opt, old_params["hidden.2.op.weight"])
        new_st = _state_of(new_opt, dict(new_net.named_parameters())["hidden.3.op.weight"])
        for key in keys:
            assert torch.equal(new_st[key], old_st[key])
    # the old optimizer is left alone
    after_state = opt.state_dict()
    for idx, st in old_state_before["state"].items():
        for key, value in st.items():
            assert torch.equal(after_state["state"][idx][key], value)

    # One more step on both: the new units output zero, so the old parameters get the same
    # gradients and, with carried moments, exactly the same update as in the old network.
    # (The old pair is stepped as a deep copy: see test_carried_state_is_not_shared.)
    ref_net, ref_opt = copy.deepcopy((net, opt))
    old_params = dict(ref_net.named_parameters())
    _train_steps(ref_net, ref_opt, x, y, 1)
    _train_steps(new_net, new_opt, x, y, 1)
    new_params = dict(new_net.named_parameters())
    for pname, p in new_params.items():
        assert torch.isfinite(p).all(), pname
        if surgery == "deepen":
            old_name = _old_name_depth(pname, layer)
            if old_name is None:
                continue
            expect, got = old_params[old_name], p
        else:
            expect, got = old_params[pname], _old_part_width(pname, p, layer, w, last)
        torch.testing.assert_close(got, expect, atol=1e-9, rtol=1e-9, msg=pname)


@pytest.mark.parametrize("opt_name", ["sgd-momentum", "adam"])
def test_carried_state_is_not_shared(opt_name: str) -> None:
    spec = SPECS["mlp-relu-bn-3"]
    cfg = OPT_CFGS[opt_name]
    net = make_net(spec)
    x, y = batch(spec, n=10)
    opt = make_optimizer(net, cfg)
    _train_steps(net, opt, x, y, 2)
    nxt = next_weight(net, 1)
    _, new_net, index_map = widen(net, 1, torch.randn(nxt.shape[0], 2, dtype=torch.float64))
    new_opt = make_optimizer(new_net, cfg)
    carry_optimizer_state(opt, net, new_opt, new_net, index_map)
    before = copy.deepcopy(opt.state_dict())
    _train_steps(new_net, new_opt, x, y, 1)  # stepping the new optimizer ...
    after = opt.state_dict()
    for idx, st in before["state"].items():  # ... must leave the old one as it was
        for key, value in st.items():
            assert torch.equal(after["state"][idx][key], value), (idx, key)
