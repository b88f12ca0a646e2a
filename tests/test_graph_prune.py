"""netsize.graph.prune: ODF2NNA statistics, choice and transfer for any graph network.

Expected tensors come from plain slicing of the old network's tensors; constant units are made
by zeroing their fan-in rows (bias c where there is one) and pinning the batch norms on the way.
"""

from __future__ import annotations

import graphs
import pytest
import torch
from graphs import Nodes, batch, make
from torch import Tensor, nn

from netsize.errors import UserError
from netsize.graph.build import GraphNet, build_graph
from netsize.graph.groups import Group, find_groups
from netsize.graph.prune import (
    narrow_all,
    prune_and_transfer,
    select_units,
    unit_scores,
    unit_statistics,
)
from netsize.graph.spec import GraphSpec

EPS = 1e-9  # removes exactly the constant units (std 0)


def residual_1x1() -> GraphSpec:
    """A coupled group (stem + b1) whose consumers have biases and no padding: b1 reads the
    group it belongs to, c3 is a 1x1 conv."""
    b = Nodes()
    x = b.act("a0", b.bn("bn0", b.conv("stem", "input", 4)))
    y = b.bn("bnb", b.conv("b1", x, 4, kernel=1))
    x = b.act("a1", b.op("add1", "add", x, y))
    x = b.act("a2", b.conv("c3", x, 3, kernel=1))
    b.op("out", "linear", b.op("gap", "gap", x), width=3)
    return b.spec((2, 6, 6))


def group(net: GraphNet, name: str) -> Group:
    return next(g for g in find_groups(net.spec) if g.name == name)


def make_constant(net: GraphNet, name: str, units: list[int], c: float = 0.7) -> None:
    """Zero fan-in rows of every producer (bias c); batch norms on the way map the unit to
    gamma * input + 0.5, so it stays constant and away from 0 after any activation."""
    g = group(net, name)
    with torch.no_grad():
        for op, sites in g.sites:
            rows = [s.offset + u for s in sites for u in units]
            module = net.ops[op] if op in net.ops else None
            if op in g.producers:
                assert isinstance(module, nn.Linear | nn.Conv2d)
                module.weight[rows] = 0.0
                if module.bias is not None:
                    module.bias[rows] = c
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean[rows] = 0.0
                module.running_var[rows] = 1.0
                module.bias[rows] = 0.5


def data(spec: GraphSpec, n: int = 40) -> tuple[Tensor, Tensor]:
    return batch(spec, n), torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(2))


def eval_out(net: GraphNet, x: Tensor) -> Tensor:
    with torch.no_grad():
        return net.eval()(x)


def width(net: GraphNet, name: str) -> int:
    return group(net, name).units


# ----------------------------------------------------------------------- constant units
@pytest.mark.parametrize(("family", "name"), [
    ("mlp", "fc1"), ("mlp", "fc2"),  # linear consumers
    ("flatten_cnn", "c2"), ("vgg", "c3"),  # flatten consumer: per-position means
    ("stage_cnn", "c3"),  # channels read through gap by a linear op
    ("secnn", "c3"),  # read through a concat (offset 3) by a 1x1 conv
    ("wrn", "c4"),  # coupled: c4 + proj through a residual add
    ("residual_1x1", "stem"),  # coupled; consumer b1 is also a producer of the group
])
def test_constant_units_are_removed_and_folding_keeps_outputs(family, name):
    spec = residual_1x1() if family == "residual_1x1" else graphs.FAMILIES[family]()
    net = make(spec)
    make_constant(net, name, [1, 3])
    x, y = data(spec)
    stats = unit_statistics(net, x, y, "classification")
    assert stats[name].std[[1, 3]].max() == 0.0
    assert stats[name].mean[[1, 3]].abs().min() > 1e-3  # folding matters: the test can fail
    for epsilon in (EPS, 0.1, 0.5):
        kept = select_units(unit_scores(stats, "variability"), epsilon, "layer", 0)[name]
        assert 1 not in kept and 3 not in kept
    before = eval_out(net, x)
    _, small = prune_and_transfer(net, stats, "variability", EPS, "layer", 0, fold_mean=True)
    assert width(small, name) <= width(net, name) - 2
    torch.testing.assert_close(eval_out(small, x), before, atol=1e-6, rtol=0)
    _, unfolded = prune_and_transfer(net, stats, "variability", EPS, "layer", 0, False)
    assert not torch.allclose(eval_out(unfolded, x), before, atol=1e-6)
    torch.testing.assert_close(eval_out(net, x), before)  # the original is untouched


def test_conv_consumer_with_padding_is_exact_away_from_the_borders():
    """stage_cnn's c3 (3x3, padding 1) reads c2's channels: the fold puts the mean on all 9
    taps, right wherever no tap falls on the zero padding, wrong on the border ring."""
    spec = graphs.stage_cnn()
    net = make(spec)
    make_constant(net, "c2", [0, 2])
    x, y = data(spec)
    stats = unit_statistics(net, x, y, "classification")
    _, small = narrow_all(net, {"c2": torch.tensor([1, 3])}, stats)

    def c3_out(model: GraphNet) -> Tensor:
        seen = []
        handle = model.ops["c3"].register_forward_hook(lambda m, i, o: seen.append(o))
        eval_out(model, x)
        handle.remove()
        return seen[0]  # (N, 5, 4, 4)

    old, new = c3_out(net), c3_out(small)
    torch.testing.assert_close(new[:, :, 1:-1, 1:-1], old[:, :, 1:-1, 1:-1], atol=1e-6, rtol=0)
    assert not torch.allclose(new[:, :, 0], old[:, :, 0], atol=1e-6)


# ------------------------------------------------------------------------------ statistics
def test_statistics_match_direct_computation():
    spec = graphs.flatten_cnn()
    net = make(spec)
    x, y = data(spec, 30)
    stats = unit_statistics(net, x, y, "classification", chunk=7)
    seen = []
    handle = net.ops["c2"].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    net.eval()(x)  # c2 reads p1: (30, 3, 4, 4)
    handle.remove()
    a = seen[0].detach()
    torch.testing.assert_close(stats["c1"].mean, a.mean((0, 2, 3)))
    torch.testing.assert_close(stats["c1"].std, a.transpose(0, 1).flatten(1).std(1, correction=0))
    torch.testing.assert_close(stats["c1"].magnitude, a.abs().mean((0, 2, 3)))
    torch.testing.assert_close(stats["c1"].fold["c2"][0], a.mean((0, 2, 3))[:, None])
    # c2's channels are read after the flatten: per position means, 4 per channel
    flat = torch.nn.functional.avg_pool2d(
        net.ops["bn2"](net.ops["c2"](a)).relu(), 2).flatten(1)  # (30, 16)
    torch.testing.assert_close(stats["c2"].fold["fc1"][0], flat.mean(0).view(4, 4))


def test_taylor_is_the_first_order_loss_change_through_every_consumer():
    spec = graphs.secnn()  # c1's channels are read by c2 and (pooled, concatenated) by c4
    net = make(spec).eval()
    x, y = data(spec, 12)
    stats = unit_statistics(net, x, y, "classification", chunk=5)
    reads = {}

    def keep_input(name):
        def hook(module, inputs):
            reads[name] = inputs[0].clone()  # its gradient: through this op only
            return (reads[name],)
        return hook

    handles = [net.ops[c].register_forward_pre_hook(keep_input(c)) for c in ("c2", "c4")]
    loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum")
    for h in handles:
        h.remove()
    g2, g4 = torch.autograd.grad(loss, [reads["c2"], reads["c4"]])
    change = (reads["c2"] * g2).sum((2, 3)) + (reads["c4"] * g4)[:, :3].sum((2, 3))  # (N, 3)
    torch.testing.assert_close(stats["c1"].taylor, change.mean(0).abs().detach())


def test_criteria_rank_units_as_defined():
    """A unit with zero fan-in and bias 0.5 is constant at tanh(0.5): the least variable, cv 0,
    magnitude tanh(0.5); taylor is a non-negative score per unit."""
    b = Nodes()
    x = b.act("a1", b.op("fc1", "linear", "input", width=8), "tanh")
    b.op("out", "linear", b.act("a2", b.op("fc2", "linear", x, width=7), "tanh"), width=3)
    spec = b.spec((6,))
    net = make(spec)
    with torch.no_grad():
        net.ops["fc1"].weight[2] = 0.0
        net.ops["fc1"].bias[2] = 0.5
    x, y = data(spec, 50)
    stats = unit_statistics(net, x, y, "classification")
    assert int(unit_scores(stats, "variability")["fc1"].argmin()) == 2
    assert unit_scores(stats, "cv")["fc1"][2] < 1e-6
    magnitude = unit_scores(stats, "magnitude")["fc1"]
    assert magnitude[2] == pytest.approx(float(torch.tanh(torch.tensor(0.5))))
    taylor = unit_scores(stats, "taylor")["fc1"]
    assert taylor.shape == (8,) and bool((taylor >= 0).all()) and bool(taylor.any())


# ---------------------------------------------------------------------------------- choice
def test_select_units_threshold_scope_minimum_and_error():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 6.0]), "b": torch.tensor([10.0, 20.0])}
    assert {k: v.tolist() for k, v in select_units(scores, 1.0, "layer", 0).items()} == {
        "a": [2, 3], "b": [1]}  # means 3 and 15
    pooled = select_units(scores, 0.8, "global", 0)  # pooled mean 7, threshold 5.6
    assert {k: v.tolist() for k, v in pooled.items()} == {"a": [3], "b": [0, 1]}
    most = select_units(scores, 100.0, "layer", 2)
    assert {k: v.tolist() for k, v in most.items()} == {"a": [2, 3], "b": [0, 1]}
    with pytest.raises(UserError, match=r"prune\.epsilon 100.0 removes every unit of group a"):
        select_units(scores, 100.0, "layer", 0)


def test_select_units_keeps_whole_norm_groups():
    scores = {"g": torch.tensor([0.1, 5.0, 1.0, 1.2, 0.2, 0.3])}  # mean 1.3
    assert select_units(scores, 1.0, "layer", 0, {"g": 2})["g"].tolist() == [0, 1]  # 2.55
    assert select_units(scores, 0.8, "layer", 0, {"g": 2})["g"].tolist() == [0, 1, 2, 3]
    assert select_units(scores, 9.0, "layer", 3, {"g": 2})["g"].tolist() == [0, 1, 2, 3]
    assert select_units(scores, 9.0, "layer", 1, {"g": 3})["g"].tolist() == [0, 1, 2]


def test_group_norms_lose_whole_groups():
    spec = graphs.group_norm()  # fc1: 4 units, gn3 with 2 groups of 2
    net = make(spec)
    x, y = data(spec)
    stats = unit_statistics(net, x, y, "classification")
    stats["fc1"].std = torch.tensor([0.0, 9.0, 0.1, 0.2], dtype=torch.float64)
    new_spec, small = prune_and_transfer(net, stats, "variability", 1.0, "layer", 0, True)
    assert new_spec.node("fc1").width == 2 and new_spec.node("gn3").groups == 1
    torch.testing.assert_close(small.ops["gn3"].weight, net.ops["gn3"].weight[:2])
    torch.testing.assert_close(small.ops["fc1"].weight, net.ops["fc1"].weight[:2])
    assert width(small, "c1") == 6  # one block of 6: cannot lose anything


def test_min_units_is_respected_in_every_group():
    spec = graphs.resnet()
    net = make(spec)
    x, y = data(spec)
    stats = unit_statistics(net, x, y, "classification")
    _, small = prune_and_transfer(net, stats, "cv", 50.0, "global", 2, True)
    for g in find_groups(net.spec):
        assert width(small, g.name) == min(2, g.units)
    with pytest.raises(UserError, match="prune.epsilon"):
        prune_and_transfer(net, stats, "cv", 50.0, "global", 0, True)


# -------------------------------------------------------------------------------- transfer
@pytest.mark.parametrize("family", sorted(graphs.FAMILIES))
@pytest.mark.parametrize("criterion", ["variability", "cv", "magnitude", "taylor"])
def test_pruned_network_is_smaller_and_reloads(family, criterion):
    spec = graphs.FAMILIES[family]()
    net = make(spec)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = data(spec, 16)
    stats = unit_statistics(net, x, y, "classification")
    new_spec, small = prune_and_transfer(net, stats, criterion, 1.0, "layer", 1, True)
    assert new_spec == small.spec and new_spec.params() < spec.params()
    assert sum(p.numel() for p in small.parameters()) == new_spec.params()
    fresh = build_graph(new_spec).double()
    fresh.load_state_dict(small.state_dict())
    assert eval_out(fresh, x).shape == (16, 3)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_kept_weights_are_copied_exactly():
    spec = graphs.flatten_cnn()
    net = make(spec)
    _, small = narrow_all(net, {"c2": torch.tensor([0, 3]), "fc1": torch.tensor([1, 2, 5])})
    old, new = net.state_dict(), small.state_dict()
    cols = [0, 1, 2, 3, 12, 13, 14, 15]  # channels 0 and 3, 4 positions each
    torch.testing.assert_close(new["ops.c2.weight"], old["ops.c2.weight"][[0, 3]], rtol=0, atol=0)
    torch.testing.assert_close(new["ops.bn2.running_var"], old["ops.bn2.running_var"][[0, 3]])
    torch.testing.assert_close(new["ops.fc1.weight"], old["ops.fc1.weight"][[1, 2, 5]][:, cols],
                               rtol=0, atol=0)
    torch.testing.assert_close(new["ops.fc1.bias"], old["ops.fc1.bias"][[1, 2, 5]])
    torch.testing.assert_close(new["ops.out.weight"], old["ops.out.weight"][:, [1, 2, 5]])
    torch.testing.assert_close(new["ops.c1.weight"], old["ops.c1.weight"], rtol=0, atol=0)


def test_coupled_group_copies_every_producer_and_folds_into_consumer_biases():
    spec = graphs.wrn()
    net = make(spec)
    x, y = data(spec)
    stats = unit_statistics(net, x, y, "classification")
    keep = torch.tensor([0, 2, 4])
    _, small = narrow_all(net, {"c4": keep}, stats)
    old, new = net.state_dict(), small.state_dict()
    for name in ("ops.c4.weight", "ops.proj.weight", "ops.n5.weight", "ops.n5.running_mean"):
        torch.testing.assert_close(new[name], old[name][keep], rtol=0, atol=0)
    torch.testing.assert_close(new["ops.out.weight"], old["ops.out.weight"][:, keep])
    mean = stats["c4"].fold["out"][0][[1, 3], 0]  # removed units, read after gap
    folded = old["ops.out.bias"] + old["ops.out.weight"][:, [1, 3]] @ mean
    torch.testing.assert_close(new["ops.out.bias"], folded)


def test_unknown_group_names_are_refused():
    net = make(graphs.mlp())
    with pytest.raises(ValueError, match="nope is not a group"):
        narrow_all(net, {"nope": torch.tensor([0])})
    _, copy = narrow_all(net, {"fc1": torch.arange(5)})  # nothing removed: a copy
    assert copy is not net
