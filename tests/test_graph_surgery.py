"""netsize.graph.groups and netsize.graph.surgery: the growable groups of every architecture
family, and width/depth surgery that keeps the function in train and eval mode.

Expected groups are written out by hand; expected tensors come from plain slicing of the old
and new tensors, never from calling the function under test a second time.
"""

from __future__ import annotations

import copy
import random

import graphs
import pytest
import torch
from graphs import batch, make
from torch import Tensor, nn

from netsize.graph.build import GraphNet, build_graph
from netsize.graph.groups import Group, describe, find_groups, width_params
from netsize.graph.spec import GraphSpec, Node
from netsize.graph.surgery import deepen, narrow, widen
from netsize.surgery import IndexMap, carry_optimizer_state, remap

F64 = torch.float64


# ---------------------------------------------------------------------------------- helpers
def outputs(net: nn.Module, x: Tensor, train: bool) -> Tensor:
    """A fresh forward of a copy in the given mode (running stats of `net` untouched)."""
    net = copy.deepcopy(net).train(train)
    with torch.no_grad():
        return net(x)


def assert_preserved(old: nn.Module, new: nn.Module, x: Tensor) -> None:
    for train in (False, True):
        torch.testing.assert_close(outputs(new, x, train), outputs(old, x, train), atol=1e-5,
                                   rtol=0.0, msg=lambda m, t=train: f"train={t}: {m}")


def state(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def assert_reproduces(old: dict[str, Tensor], new_net: nn.Module, index_map: IndexMap) -> None:
    """Every old tensor is the new one's entries whose index is not -1, in order."""
    new = new_net.state_dict()
    assert set(index_map) == set(new)
    assert {s.name for s in index_map.values() if s.name is not None} == set(old)
    for name, source in index_map.items():
        if source.name is None:
            continue
        tensor, before = new[name], old[source.name]
        for dim, index in enumerate(source.index):
            if index is None:
                continue
            kept = index >= 0
            assert torch.equal(index[kept], torch.arange(before.shape[dim])), name
            tensor = tensor.index_select(dim, kept.nonzero().squeeze(1))
        assert torch.equal(tensor, before), name


def columns(group: Group, consumer: str) -> int:
    return sum(site.mult for site in group.columns_of(consumer))


def random_fans(net: GraphNet, group: Group, k: int, form: str,
                gen: torch.Generator) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """gradmax: random fan-out, zero fan-in; zero_out: random fan-in, zero fan-out."""
    if form == "gradmax":
        fan_out = {}
        for c in group.consumers:
            w = net.ops[c].weight  # (out, in[, kh, kw])
            fan_out[c] = torch.randn(w.shape[0], k * columns(group, c), *w.shape[2:],
                                     generator=gen, dtype=F64)
        return fan_out, None
    fan_in = {}
    for p in group.producers:
        w = net.ops[p].weight
        fan_in[p] = torch.randn(k * len(group.sites_of(p)), *w.shape[1:], generator=gen,
                                dtype=F64)
    return {}, fan_in


def group_named(spec: GraphSpec, name: str) -> Group:
    return next(g for g in find_groups(spec) if g.name == name)


def gradmax_widen(net: GraphNet, name: str, k: int, seed: int = 0):
    group = group_named(net.spec, name)
    fan_out, _ = random_fans(net, group, k, "gradmax", torch.Generator().manual_seed(seed))
    return group, fan_out, widen(net, group, k, fan_out)


# ------------------------------------------------------------------------------------ groups
def sets(spec: GraphSpec) -> dict[str, tuple[set[str], set[str], bool]]:
    return {g.name: (set(g.producers), set(g.consumers), g.coupled) for g in find_groups(spec)}


def test_groups_of_the_secnn_like_net() -> None:
    spec = graphs.secnn()
    assert sets(spec) == {
        "c1": ({"c1"}, {"c2", "c4"}, False), "c2": ({"c2"}, {"c3"}, False),
        "c3": ({"c3"}, {"c4"}, False), "c4": ({"c4"}, {"fc1"}, False),
        "fc1": ({"fc1"}, {"out"}, False)}
    c1, c3, c4 = (group_named(spec, n) for n in ("c1", "c3", "c4"))
    assert c1.path == ("d1", "bn1", "a1", "p1", "s1", "s2", "cat")
    assert c1.insert_at(c1.columns_of("c4")) == [(3, 1)]  # block 1 first in the concat
    assert c3.insert_at(c3.columns_of("c4")) == [(8, 1)]  # after 3 + 5 channels
    assert c4.insert_at(c4.columns_of("fc1")) == [(16, 4)]  # 4 channels x 2 x 2 features


def test_groups_of_the_resnet() -> None:
    assert sets(graphs.resnet()) == {
        "stem": ({"stem", "c2"}, {"c1", "c3", "proj1"}, True),
        "c1": ({"c1"}, {"c2"}, False), "c3": ({"c3"}, {"c4"}, False),
        "c4": ({"c4", "proj1"}, {"b1c1", "proj2"}, True),
        "b1c1": ({"b1c1"}, {"b1c2"}, False), "b1c2": ({"b1c2"}, {"b1c3"}, False),
        "b1c3": ({"b1c3", "proj2", "b2c3"}, {"b2c1", "out"}, True),
        "b2c1": ({"b2c1"}, {"b2c2"}, False), "b2c2": ({"b2c2"}, {"b2c3"}, False)}
    assert group_named(graphs.resnet(), "stem").path == ("bn0", "a0", "bn2", "add1", "a2")


def test_groups_of_the_other_families() -> None:
    assert sets(graphs.wrn()) == {
        "stem": ({"stem", "c2"}, {"c1", "c3", "proj"}, True), "c1": ({"c1"}, {"c2"}, False),
        "c3": ({"c3"}, {"c4"}, False), "c4": ({"c4", "proj"}, {"out"}, True)}
    assert sets(graphs.depthwise()) == {"c1": ({"c1"}, {"pw1"}, False),
                                        "pw1": ({"pw1"}, {"out"}, False)}
    assert group_named(graphs.depthwise(), "c1").path == ("bn1", "a1", "dw1", "bn2", "a2")
    gn = {g.name: g for g in find_groups(graphs.group_norm())}
    assert (set(gn["c1"].producers), gn["c1"].step, gn["fc1"].step) == ({"c1", "c2"}, 6, 2)
    assert "c2" in gn["c1"].consumers  # reads the group and grows with it
    assert [g.name for g in find_groups(graphs.mlp())] == ["fc1", "fc2"]


def test_groups_that_cannot_grow_are_left_out() -> None:
    def spec(*nodes: Node, shape: tuple[int, ...] = (2, 4, 4)) -> GraphSpec:
        return GraphSpec(shape, 3, nodes)

    # channels reaching the output without a consumer (conv -> gap is the output)
    head = spec(Node("c1", "conv", ("input",), width=4), Node("c2", "conv", ("c1",), width=3),
                Node("gap", "gap", ("c2",)))
    assert [g.name for g in find_groups(head)] == ["c1"]
    # channels tied to the network input by an add
    tied = spec(Node("c1", "conv", ("input",), width=2), Node("add", "add", ("input", "c1")),
                Node("c2", "conv", ("add",), width=4), Node("gap", "gap", ("c2",)),
                Node("out", "linear", ("gap",), width=3))
    assert [g.name for g in find_groups(tied)] == ["c2"]
    # a flattened tensor added to features: the ties do not line up
    mixed = spec(Node("c1", "conv", ("input",), width=2), Node("flat", "flatten", ("c1",)),
                 Node("fc", "linear", ("flat",), width=32), Node("add", "add", ("flat", "fc")),
                 Node("out", "linear", ("add",), width=3))
    assert find_groups(mixed) == []


def test_describe_and_width_params() -> None:
    spec = graphs.flatten_cnn()
    group = group_named(spec, "c2")
    assert describe(group) == "c2 (4 units): grows c2; new columns in fc1 at 16 (x4)"
    # per unit: 3*3*3 + bias + gamma, beta + 6 outputs x 2 x 2 features
    assert width_params(spec, group, 2) == 2 * (3 * 9 + 1 + 2 + 6 * 4)


# --------------------------------------------------------------------- function preservation
def random_step(net: GraphNet, rng: random.Random, gen: torch.Generator):
    spec = net.spec
    groups = find_groups(spec)
    if rng.random() < 0.3 or not groups:
        after = rng.choice([n.name for n in spec.nodes[:-1]])
        return ("deepen", after, None, 0), deepen(net, after)
    group = rng.choice(groups)
    k = group.step * rng.randint(1, 2)
    fan_out, fan_in = random_fans(net, group, k, rng.choice(["gradmax", "zero_out"]), gen)
    return ("widen", group.name, group, k), widen(net, group, k, fan_out, fan_in)


def check_widened(spec: GraphSpec, new_spec: GraphSpec, group: Group, k: int) -> None:
    """Coupled producers grew together (the adds still see one shape), parameters as said."""
    for p in group.producers:
        added = k * len(group.sites_of(p))
        assert new_spec.node(p).width == spec.node(p).width + added
    regrown = group_named(new_spec, group.name)
    assert (regrown.units, regrown.producers) == (group.units + k, group.producers)
    for node in new_spec.nodes:
        if node.op == "add":
            assert len({new_spec.shape(i) for i in node.inputs}) == 1
    assert new_spec.params() - spec.params() == width_params(spec, group, k)


BN_FAMILIES = [f for f, make_spec in sorted(graphs.FAMILIES.items())
               if any(n.op == "norm" and n.kind == "batch" for n in make_spec().nodes)]


@pytest.mark.parametrize("family", BN_FAMILIES)
def test_batches_exercise_batch_statistics(family: str) -> None:
    """Non-vacuous: train-mode outputs differ from eval-mode ones on the test batch, so keeping
    the function in train mode is a check of its own."""
    spec = graphs.FAMILIES[family]()
    net, x = make(spec), batch(spec)
    assert not torch.allclose(outputs(net, x, True), outputs(net, x, False), atol=1e-3)


@pytest.mark.parametrize("family", sorted(graphs.FAMILIES))
def test_random_growth_keeps_the_function(family: str) -> None:
    spec = graphs.FAMILIES[family]()
    net, x = make(spec), batch(spec)
    rng, gen = random.Random(family), torch.Generator().manual_seed(7)
    first = outputs(net, x, False)
    for _ in range(20):
        before = state(net)
        (kind, where, group, k), (new_spec, new_net, index_map) = random_step(net, rng, gen)
        assert new_net.spec == new_spec and new_net.training == net.training
        assert all(torch.equal(v, before[n]) for n, v in net.state_dict().items())  # untouched
        assert_preserved(net, new_net, x)
        assert_reproduces(before, new_net, index_map)
        if kind == "widen":
            check_widened(net.spec, new_spec, group, k)
        assert sum(p.numel() for p in new_net.parameters()) == new_spec.params()
        fresh = build_graph(new_spec).double()
        fresh.load_state_dict(new_net.state_dict())  # strict: names and shapes agree
        assert torch.equal(outputs(fresh, x, False), outputs(new_net, x, False))
        net = new_net
    torch.testing.assert_close(outputs(net, x, False), first, atol=1e-5, rtol=0.0)


def test_deepen_after_a_concat_keeps_its_parts_growable() -> None:
    """The branch conv after a concat is cut in two: each part grows with its own block."""
    net = make(graphs.secnn())
    _, deep, _ = deepen(net, "cat")
    groups = {g.name: g for g in find_groups(deep.spec)}
    assert set(groups["c1"].producers) == set(groups["c3"].producers) - {"c3"} | {"c1"}
    assert groups["c1"].sites_of("res1_conv")[0].offset == 0
    assert groups["c3"].sites_of("res1_conv")[0].offset == 3
    _, _, (spec, grown, index_map) = gradmax_widen(deep, "c1", 2)
    rows = index_map["ops.res1_conv.weight"].index[0]
    assert rows.tolist() == [0, 1, 2, -1, -1, 3, 4, 5, 6, 7]  # new rows in the middle
    assert_preserved(deep, grown, batch(spec))


# ------------------------------------------------------------------------- widen: tensors
def test_widen_new_entries_and_column_positions() -> None:
    net = make(graphs.secnn())
    group, fan_out, (spec, new, index_map) = gradmax_widen(net, "c1", 2)
    old = net.state_dict()
    ops = new.ops
    assert torch.equal(ops["c1"].weight[3:], torch.zeros(2, 3, 3, 3, dtype=F64))  # GradMax
    assert torch.equal(ops["c1"].bias[3:], torch.zeros(2, dtype=F64))
    bn = ops["bn1"]
    assert bn.weight[3:].tolist() == [1, 1] and bn.bias[3:].tolist() == [0, 0]
    assert bn.running_mean[3:].tolist() == [0, 0] and bn.running_var[3:].tolist() == [1, 1]
    # c4 reads concat(block 1, block 3): the new columns sit between the two
    w = ops["c4"].weight
    assert torch.equal(w[:, 3:5], fan_out["c4"])
    assert torch.equal(w[:, :3], old["ops.c4.weight"][:, :3])
    assert torch.equal(w[:, 5:], old["ops.c4.weight"][:, 3:])
    assert torch.equal(ops["c2"].weight[:, 3:], fan_out["c2"])


def test_widen_through_a_flatten_is_channel_major() -> None:
    net = make(graphs.flatten_cnn())
    _, fan_out, (spec, new, _) = gradmax_widen(net, "c2", 2)
    w = new.ops["fc1"].weight.view(6, 6, 2, 2)  # (out, channels, h, w)
    assert torch.equal(w[:, 4:], fan_out["fc1"].view(6, 2, 2, 2))
    assert torch.equal(w[:, :4], net.ops["fc1"].weight.view(6, 4, 2, 2))


def test_widen_with_fan_in_and_a_producer_that_reads_its_group() -> None:
    net = make(graphs.group_norm())
    group = group_named(net.spec, "c1")  # c2 reads the group and grows with it
    gen = torch.Generator().manual_seed(3)
    _, fan_in = random_fans(net, group, 6, "zero_out", gen)
    assert fan_in is not None
    spec, new, _ = widen(net, group, 6, {}, fan_in)
    assert torch.equal(new.ops["c1"].weight[6:], fan_in["c1"])
    assert torch.equal(new.ops["c2"].weight[6:, :6], fan_in["c2"])
    assert not new.ops["c2"].weight[:, 6:].any()  # new columns (and new x new) are zero
    assert (spec.node("gn1").groups, spec.node("gn2").groups) == (4, 6)
    assert (new.ops["gn1"].num_groups, new.ops["gn2"].num_groups) == (4, 6)
    assert_preserved(net, new, batch(spec))


def test_group_norm_grows_by_whole_groups_only() -> None:
    net = make(graphs.group_norm())
    group = group_named(net.spec, "c1")
    with pytest.raises(ValueError, match="multiple of 6"):
        widen(net, group, 3, {})


def test_depthwise_conv_passes_new_channels_through() -> None:
    net = make(graphs.depthwise())
    _, _, (spec, new, _) = gradmax_widen(net, "c1", 2)
    w = new.ops["dw1"].weight  # (C, 1, 3, 3)
    expected = torch.zeros(2, 1, 3, 3, dtype=F64)
    expected[:, 0, 1, 1] = 1.0
    assert torch.equal(w[3:], expected) and torch.equal(w[:3], net.ops["dw1"].weight)
    assert new.ops["dw1"].bias[3:].tolist() == [0, 0]


def test_widen_rejects_bad_arguments() -> None:
    net = make(graphs.mlp())
    group = group_named(net.spec, "fc1")
    with pytest.raises(ValueError, match="expected shape"):
        widen(net, group, 1, {"fc2": torch.zeros(4, 2, dtype=F64)})
    with pytest.raises(ValueError, match="not a consumer"):
        widen(net, group, 1, {"out": torch.zeros(3, 1, dtype=F64)})
    _, grown, _ = widen(net, group, 1, {})
    with pytest.raises(ValueError, match="not a growable group"):
        widen(grown, group, 1, {})  # stale: found on the old spec


# ------------------------------------------------------------------------------------ deepen
@pytest.mark.parametrize("family,after,norm", [("resnet", "add1", "batch"),
                                               ("group_norm", "a1", "group"),
                                               ("mlp", "act1", "batch")])
def test_deepen_branch_starts_at_zero_gamma(family: str, after: str, norm: str) -> None:
    net = make(graphs.FAMILIES[family]())
    torch.manual_seed(11)
    spec, new, _ = deepen(net, after)
    assert spec.node("res1_add").inputs == (after, "res1_act")
    assert all("res1_add" in spec.node(r.name).inputs for r in net.spec.readers(after))
    assert spec.node("res1_norm").kind == norm and not new.ops["res1_norm"].weight.any()
    op = "res1_conv" if "res1_conv" in new.ops else "res1_fc"
    torch.manual_seed(11)
    reference = (nn.Conv2d(*new.ops[op].weight.shape[:2], 3, padding=1, bias=False)
                 if op == "res1_conv" else nn.Linear(*new.ops[op].weight.shape[:2][::-1],
                                                     bias=False))
    assert torch.equal(new.ops[op].weight, reference.weight.to(F64))  # default init, seeded


def test_deepen_without_norm_zeroes_the_branch_and_copies_the_activation() -> None:
    net = make(graphs.vgg())
    spec, new, _ = deepen(net, "p1")
    assert [n.op for n in spec.nodes if n.name.startswith("res1")] == ["conv", "act", "add"]
    assert not new.ops["res1_conv"].weight.any()
    leaky = make(graphs.secnn())
    spec, _, _ = deepen(leaky, "p2")
    assert (spec.node("res1_act").kind, spec.node("res1_act").slope) == ("leaky_relu", 0.2)


def test_deepen_rejects_bad_places() -> None:
    net = make(graphs.mlp())
    for after in ("out", "nope", "input"):
        with pytest.raises(ValueError, match="not an op"):
            deepen(net, after)
    with pytest.raises(ValueError, match="residual"):
        deepen(net, "act1", kind="identity")


# ------------------------------------------------------------------------------------ narrow
@pytest.mark.parametrize("family", sorted(graphs.FAMILIES))
def test_narrow_undoes_widen(family: str) -> None:
    net = make(graphs.FAMILIES[family]())
    for group in find_groups(net.spec):
        _, _, (spec, grown, _) = gradmax_widen(net, group.name, group.step)
        back_spec, back, index_map = narrow(grown, group_named(spec, group.name),
                                            torch.arange(group.units))
        assert back_spec == net.spec
        assert state(back).keys() == state(net).keys()
        assert all(torch.equal(v, net.state_dict()[n]) for n, v in back.state_dict().items())
        old = grown.state_dict()
        for name, source in index_map.items():
            assert torch.equal(back.state_dict()[name], remap(old[name], source.index))


def test_narrow_keeps_the_listed_units() -> None:
    net = make(graphs.flatten_cnn())
    keep = torch.tensor([0, 2, 3])
    spec, new, _ = narrow(net, group_named(net.spec, "c2"), keep)
    assert spec.node("c2").width == 3
    assert torch.equal(new.ops["c2"].weight, net.ops["c2"].weight[keep])
    assert torch.equal(new.ops["bn2"].running_var, net.ops["bn2"].running_var[keep])
    fc1 = net.ops["fc1"].weight.view(6, 4, 2, 2)[:, keep].reshape(6, 12)
    assert torch.equal(new.ops["fc1"].weight, fc1)


def test_narrow_group_norm_drops_whole_groups() -> None:
    net = make(graphs.group_norm())
    group = group_named(net.spec, "fc1")  # gn3: 2 groups of 2 features
    spec, new, _ = narrow(net, group, torch.tensor([2, 3]))
    assert spec.node("gn3").groups == 1 and new.ops["gn3"].num_groups == 1
    with pytest.raises(ValueError, match="whole groups"):
        narrow(net, group, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="keep 1 to 4"):
        narrow(net, group, torch.tensor([4]))


# ----------------------------------------------------------------------- optimizer state
def test_optimizer_state_follows_the_index_map() -> None:
    net = make(graphs.resnet())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = batch(net.spec)
    net(x).square().mean().backward()
    opt.step()
    _, _, (spec, new, index_map) = gradmax_widen(net, "stem", 2)
    new_opt = torch.optim.Adam(new.parameters(), lr=1e-3)
    carry_optimizer_state(opt, net, new_opt, new, index_map)
    old_m = opt.state[net.ops["c2"].weight]["exp_avg"]  # (4, 3, 3, 3): c2 grows rows
    new_m = new_opt.state[new.ops["c2"].weight]["exp_avg"]
    assert torch.equal(new_m[:4], old_m) and not new_m[4:].any()
    old_m = opt.state[net.ops["c3"].weight]["exp_avg"]  # c3 reads the group: new columns
    new_m = new_opt.state[new.ops["c3"].weight]["exp_avg"]
    assert torch.equal(new_m[:, :4], old_m) and not new_m[:, 4:].any()
