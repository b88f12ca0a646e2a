"""Prune-and-transfer for netsize networks: statistics, selection, transfer with mean folding."""

from __future__ import annotations

import pytest
import torch

from netsize.errors import UserError
from netsize.model import build
from netsize.prune import select_units, unit_scores, unit_statistics
from netsize.spec import LayerSpec, NetSpec
from netsize.surgery import narrow

MLP_BN = NetSpec("mlp", (6,), 3, (LayerSpec(8, True), LayerSpec(7, False), LayerSpec(5, True)))
MLP = NetSpec("mlp", (6,), 3, (LayerSpec(8, False), LayerSpec(7, False)))
CNN = NetSpec("cnn", (2, 6, 6), 3, (LayerSpec(4, True, 0, False), LayerSpec(6, True, 1, False)))


def _net(spec: NetSpec):
    torch.manual_seed(0)
    net = build(spec).double()
    net.train()
    for _ in range(3):  # non-trivial running statistics
        net(torch.randn(16, *spec.input_shape, dtype=torch.float64))
    return net.eval()


def _make_constant(net, layer: int, units: list[int], value: float) -> None:
    """Units with zero fan-in and bias `value`: their activation is constant."""
    with torch.no_grad():
        op = net.layer(layer).op
        op.weight[units] = 0.0
        op.bias[units] = value


@pytest.mark.parametrize(("spec", "layer"), [(MLP_BN, 0), (MLP_BN, 1), (MLP_BN, 2), (MLP, 0),
                                             (MLP, 1), (CNN, 1)])
def test_removing_constant_units_with_folded_means_keeps_outputs(spec, layer):
    net = _net(spec)
    _make_constant(net, layer, [1, 3], 0.7)
    x = torch.randn(40, *spec.input_shape, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    stats = unit_statistics(net, x, y, "classification")
    assert stats.std[layer][[1, 3]].max() < 1e-6  # the two units really are constant
    keep = [torch.arange(w) for w in spec.widths()]
    keep[layer] = torch.tensor([u for u in range(spec.layers[layer].width) if u not in (1, 3)])
    before = net(x)
    new_spec, small, _ = narrow(net, keep, stats.mean)
    assert new_spec.layers[layer].width == spec.layers[layer].width - 2
    torch.testing.assert_close(small(x), before, atol=1e-5, rtol=0)
    # Without folding the means the output does change: the test can fail.
    _, unfolded, _ = narrow(net, keep, None)
    assert not torch.allclose(unfolded(x), before, atol=1e-5)
    torch.testing.assert_close(net(x), before)  # the original is untouched


def test_narrow_copies_kept_rows_columns_and_batch_norm_entries():
    net = _net(MLP_BN)
    keep = [torch.tensor([0, 2, 5]), torch.tensor([1, 6]), torch.tensor([0, 1, 4])]
    _, small, _ = narrow(net, keep)
    old_w = net.layer(1).op.weight
    torch.testing.assert_close(small.layer(1).op.weight, old_w[[1, 6]][:, [0, 2, 5]])
    old_var = net.layer(0).norm.running_var
    torch.testing.assert_close(small.layer(0).norm.running_var, old_var[[0, 2, 5]])
    torch.testing.assert_close(small.head.weight, net.head.weight[:, [0, 1, 4]])


def test_unit_statistics_match_direct_computation():
    net = _net(CNN)
    x = torch.randn(30, 2, 6, 6, dtype=torch.float64)
    stats = unit_statistics(net, x, torch.randint(0, 3, (30,)), "classification", chunk=7)
    _, taps = net.forward_taps(x)
    a = taps[0].a.detach()
    torch.testing.assert_close(stats.mean[0].double(), a.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.std[0].double(), a.permute(1, 0, 2, 3).flatten(1)
                               .std(1, unbiased=False), rtol=1e-4, atol=1e-6)


def test_select_units_threshold_scope_and_minimum():
    scores = [torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([10.0, 20.0])]
    layer = select_units(scores, 1.0, "layer", 0)  # means 3 and 15
    assert [k.tolist() for k in layer] == [[2, 3], [1]]
    pooled = select_units(scores, 0.8, "global", 0)  # pooled mean 7, threshold 5.6
    assert [k.tolist() for k in pooled] == [[3], [0, 1]]
    assert [k.tolist() for k in select_units(scores, 100.0, "layer", 2)] == [[2, 3], [0, 1]]
    with pytest.raises(UserError, match="every unit of hidden layer 0"):
        select_units(scores, 100.0, "layer", 0)


def test_criteria_rank_units_as_defined():
    net = _net(MLP)
    _make_constant(net, 0, [2], 0.5)
    x = torch.randn(50, 6, dtype=torch.float64)
    stats = unit_statistics(net, x, torch.randint(0, 3, (50,)), "classification")
    variability = unit_scores(net, stats, "variability")[0]
    assert int(variability.argmin()) == 2
    cv = unit_scores(net, stats, "cv")[0]
    assert cv[2] < 1e-6
    magnitude = unit_scores(net, stats, "magnitude")[0]
    assert magnitude[2] == pytest.approx(0.5)  # only the bias is left
    taylor = unit_scores(net, stats, "taylor")[0]
    assert taylor.shape == (8,) and bool((taylor >= 0).all())
