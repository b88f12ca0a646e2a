"""eta from the probe's taps equals eta from per-example autograd (torch.func)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from netsize import losses, scores
from netsize.model import build
from netsize.spec import LayerSpec, NetSpec

SPECS = {
    "mlp": NetSpec("mlp", (5,), 3, (LayerSpec(6, True), LayerSpec(4, False))),
    "cnn": NetSpec("cnn", (2, 7, 7), 3, (LayerSpec(4, True, 0, False),
                                         LayerSpec(3, False, 0, False),
                                         LayerSpec(5, True, 1, False))),
}


def _reference_eta(net, x, y, task, damping):
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def loss(prm, xi, yi):
        out = functional_call(net, (prm, buffers), (xi[None],))
        return losses.per_example_loss(out, yi[None], task).sum()

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    mean, sq = flat.mean(0), flat.pow(2).mean(0)
    return float((mean.pow(2) / (sq + damping)).sum())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_current_score_matches_per_example_autograd(kind, task):
    spec = SPECS[kind]
    net = build(spec).double()
    net.train()
    for _ in range(3):
        net(torch.randn(16, *spec.input_shape, dtype=torch.float64))
    x = torch.randn(20, *spec.input_shape, dtype=torch.float64)
    y = (torch.randint(0, 3, (20,)) if task == "classification"
         else torch.randn(20, 3, dtype=torch.float64))
    probe = scores.probe(net, x, y, task)
    assert net.training  # the probe restores the mode it found
    got = scores.current_score(net, probe, 1e-3)
    assert got == pytest.approx(_reference_eta(net, x, y, task, 1e-3), rel=1e-9)


def test_natural_score_bounds():
    # Identical per-example gradients: each term is g^2 / (g^2 + damping) -> about P.
    same = torch.ones(10, 4)
    assert scores.natural_score(same, 1e-9) == pytest.approx(4.0)
    # Gradients that cancel on average carry no expected loss decrease.
    opposite = torch.cat([torch.ones(5, 4), -torch.ones(5, 4)])
    assert scores.natural_score(opposite, 1e-9) == pytest.approx(0.0)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 2, 6, 5)])
def test_unfold_same_equals_torch_unfold(k, shape):
    x = torch.randn(shape)
    expected = torch.nn.functional.unfold(x, k, padding=k // 2)
    assert torch.equal(scores.unfold_same(x, k), expected)
