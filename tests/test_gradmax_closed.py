"""GradMax's closed-form matrix (netsize.graph.gradmax_closed) equals the row-by-row M that
autograd builds on the grown network (scores.gradmax_matrix), for every group it accepts, on
every family; groups it cannot read (adds, concats, group norms, depthwise convs) are left to
the row-by-row M. float64, so agreement is to rounding."""

from __future__ import annotations

import graphs
import pytest
import torch
from graphs import Nodes, batch, make

from netsize.graph import grow, scores
from netsize.graph.gradmax_closed import closed_form_matrix, fanin_grads
from netsize.graph.groups import find_groups
from netsize.graph.spec import GraphSpec
from netsize.graph.surgery import widen


def _labels(spec: GraphSpec, n: int) -> torch.Tensor:
    return torch.randint(0, spec.n_outputs, (n,), generator=torch.Generator().manual_seed(3))


def _probes(spec: GraphSpec, k: int = 2, n: int = 12):
    net = make(spec)
    x, y = batch(spec, n), _labels(spec, n)
    for group in find_groups(spec):
        _, grown, index_map = widen(net, group, k * group.step, {})
        yield group, scores.FanOutProbe(grown, group, k * group.step, index_map, x, y,
                                        "classification")


def _pooled_variants() -> GraphSpec:
    """Strided and padded convs, max pooling with padding and an odd size, average pooling,
    every activation on the way, no bias, dropout, a flatten head with two consumers' worth
    of reading (the hidden linear)."""
    b = Nodes()
    x = b.act("a1", b.bn("bn1", b.conv("c1", "input", 3, stride=2)), "gelu")
    x = b.op("mp", "pool", x, kind="max", kernel=3, stride=2, padding=1)
    x = b.act("a2", b.bn("bn2", b.conv("c2", x, 4, kernel=1, bias=False)), "silu")
    x = b.op("drop", "dropout", b.act("a3", b.conv("c3", x, 3), "hardswish"), p=0.3)
    x = b.op("flat", "flatten", b.pool("ap", b.act("a4", b.conv("c4", x, 2), "tanh"), "avg"))
    b.op("out", "linear", b.act("a5", b.op("fc", "linear", x, width=4), "leaky_relu"), width=3)
    return b.spec((2, 11, 11))


FAMILIES = {**graphs.FAMILIES, "pooled_variants": _pooled_variants}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_closed_form_equals_row_by_row_matrix(family: str):
    closed = 0
    for group, probe in _probes(FAMILIES[family]()):
        m = closed_form_matrix(probe)
        if m is None:
            assert group.coupled or len(group.producers) > 1 or any(
                probe.net.spec.node(n).op in ("concat", "add", "scale") or
                probe.net.spec.node(n).depthwise or probe.net.spec.node(n).kind == "group"
                for n in group.path), group.name  # only what it cannot read is left out
            continue
        closed += 1
        exact = scores.gradmax_matrix(probe)
        assert m.shape == exact.shape == (probe.dim(), exact.shape[1])
        assert exact.abs().max() > 1e-8, group.name  # a real comparison, not zeros
        torch.testing.assert_close(m, exact, rtol=1e-9, atol=1e-12)
    if family in ("mlp", "stage_cnn", "flatten_cnn", "vgg", "pooled_variants"):
        assert closed == len(find_groups(FAMILIES[family]())), family  # every group is plain


def test_max_pooling_routes_a_new_channel_to_each_windows_first_element():
    """A max pool over an all-zero new channel passes gradient to one element per window
    (the first); the closed form reads that routing rather than spreading it."""
    b = Nodes()
    x = b.pool("p", b.act("a", b.conv("c1", "input", 2)))
    b.op("out", "linear", b.op("flat", "flatten", x), width=2)
    spec = b.spec((1, 4, 4), 2)
    group, probe = next(_probes(spec, k=1))
    m = closed_form_matrix(probe)
    assert m is not None
    torch.testing.assert_close(m, scores.gradmax_matrix(probe), rtol=1e-9, atol=1e-12)


def test_gradmax_fanout_uses_the_closed_form(monkeypatch: pytest.MonkeyPatch):
    """Growth takes M from one backward pass: the row-by-row builder is never called for a
    plain group, and the fan-out is M's top singular vectors all the same."""
    group, probe = next(_probes(graphs.flatten_cnn()))
    exact = scores.gradmax_matrix(probe)

    def refuse(_probe: scores.FanOutProbe) -> torch.Tensor:
        raise AssertionError("row-by-row M built for a plain group")

    monkeypatch.setattr(scores, "gradmax_matrix", refuse)
    u = scores.gradmax_fanout(probe, probe.k, torch.Generator().manual_seed(0))
    top = torch.linalg.svd(exact, full_matrices=False)[0][:, : probe.k]
    torch.testing.assert_close((u.T @ top).abs(), torch.eye(probe.k, dtype=u.dtype),
                               rtol=0, atol=1e-8)


@pytest.mark.parametrize("init", ["gradmax", "random"])
@pytest.mark.parametrize("family", ["stage_cnn", "flatten_cnn", "mlp", "pooled_variants"])
def test_closed_form_gain_is_the_grown_networks(init: str, family: str):
    """For each plain group: the per-example new fan-in gradients from the check's capture
    equal autograd's on the network widened with that fan-out, example by example, and so
    the gain equals scores.gain on it; eta from the capture is eta."""
    spec = FAMILIES[family]()
    net = make(spec)
    x, y = batch(spec, 10), _labels(spec, 10)
    cap = scores.check_capture(net, x, y, "classification")
    assert cap is not None
    assert scores.eta_from(net, cap, 1e-3) == pytest.approx(
        scores.eta(net, x, y, "classification", 1e-3), rel=1e-12)
    for group in find_groups(spec):
        k = 2 * group.step
        probe, u = grow.fan_out(net, group, k, init, 0.5, (x, y, "classification"),
                                torch.Generator().manual_seed(4), cap)
        _, grown, index_map = widen(net, group, k, probe.fan_out_weights(u))
        got = fanin_grads(probe, u, cap)
        assert got is not None
        names = [name for name, _ in probe.fan_in]
        per = scores.per_example_grads_func(grown, names, x, y, "classification")
        want = torch.cat([g[:, mask].reshape(len(x), k, -1) for g, (_, mask)
                          in zip(per.values(), probe.fan_in, strict=True)], dim=2)
        torch.testing.assert_close(got, want.flatten(1), rtol=1e-9, atol=1e-12)
        assert float(want.abs().max()) > 1e-8
        assert scores.natural_score(got, 1e-3) == pytest.approx(
            scores.gain(grown, index_map, x, y, "classification", 1e-3), rel=1e-9)


@pytest.mark.parametrize("family", sorted(graphs.FAMILIES))
def test_a_probe_grown_with_a_fan_out_is_what_widen_builds(family: str):
    """Growth writes the fan-out into the probe network instead of widening again: the very
    tensors widen(net, group, k, fan_out_weights(u)) gives, in every family."""
    spec = graphs.FAMILIES[family]()
    net = make(spec)
    for group, probe in _probes(spec):
        u = torch.randn(probe.dim(), probe.k, generator=torch.Generator().manual_seed(5),
                        dtype=torch.float64)
        _, want, want_map = widen(net, group, probe.k, probe.fan_out_weights(u))
        got, got_map = probe.grown_with(u)
        assert got.spec == want.spec and got_map.keys() == want_map.keys()
        for name, value in want.state_dict().items():
            assert torch.equal(got.state_dict()[name], value), (group.name, name)


def test_maps_too_large_keep_the_row_by_row_matrix(monkeypatch: pytest.MonkeyPatch):
    """A plain group whose fan-in maps would not fit the memory cap takes the old path: no
    closed form, and growth still gets M's top singular vectors and the exact gain."""
    from netsize.graph import gradmax_closed

    group, probe = next(_probes(graphs.flatten_cnn()))
    exact = scores.gradmax_matrix(probe)
    monkeypatch.setattr(gradmax_closed, "MAX_ELEMENTS", 1)
    assert gradmax_closed.plain(probe) and not gradmax_closed.applies(probe)
    assert closed_form_matrix(probe) is None
    assert fanin_grads(probe, torch.zeros(probe.dim(), probe.k, dtype=torch.float64),
                       scores.check_capture(probe.net, probe.x, probe.y, probe.task)) is None
    u = scores.gradmax_fanout(probe, probe.k, torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(exact)[: probe.k]  # power iteration: the top subspace, nearly
    assert float(probe.fanin_grad(u).norm()) >= 0.999 * float(s.pow(2).sum().sqrt())
