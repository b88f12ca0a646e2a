"""Scores on any graph network, checked against autograd and brute force (float64):
per-example gradients equal one-example autograd; eta equals a natural score written out from
torch.func gradients, for classification and regression, in the mode it found; a candidate's
gain equals eta of the network growth builds minus eta now; the GradMax fan-in gradient equals
the grown module's and is at least that of random fan-outs of the same norm; power iteration
finds M's top subspace."""

from __future__ import annotations

import pytest
import torch
from graphs import batch, flatten_cnn, make, mlp, resnet, secnn, stage_cnn, wrn
from torch.func import functional_call, grad, vmap

from netsize.graph import scores
from netsize.graph.groups import find_groups
from netsize.graph.spec import GraphSpec
from netsize.graph.surgery import deepen, widen
from netsize.losses import per_example_loss

FAMILIES = {"mlp": mlp, "stage_cnn": stage_cnn, "flatten_cnn": flatten_cnn, "secnn": secnn,
            "resnet": resnet, "wrn": wrn}
DAMPING = 1e-3


def _data(spec: GraphSpec, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    x = batch(spec, n)
    y = torch.randint(0, spec.n_outputs, (n,), generator=torch.Generator().manual_seed(3))
    return x, y


@pytest.mark.parametrize("family", ["secnn", "resnet"])
def test_per_example_grads_equal_autograd(family: str):
    spec = FAMILIES[family]()
    net, (x, y) = make(spec), _data(spec)
    names = [n for n, _ in net.named_parameters()]
    got = scores.per_example_grads(net, names, x, y, "classification", chunk=4)
    net.eval()
    for i in range(len(x)):
        loss = per_example_loss(net(x[i : i + 1]), y[i : i + 1], "classification").sum()
        want = torch.autograd.grad(loss, list(net.parameters()))
        for name, g in zip(names, want, strict=True):
            torch.testing.assert_close(got[name][i], g)


def _reference_eta(net, x, y, task, damping):
    """sum_i mean_n(g)^2 / (mean_n(g^2) + damping) over every parameter, eval mode, from
    torch.func per-example gradients and an independent loss."""
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def loss(prm, xi, yi):
        out = functional_call(net, (prm, buffers), (xi[None],))
        if task == "classification":
            return torch.nn.functional.cross_entropy(out, yi[None])
        return 0.5 * (out - yi[None]).pow(2).sum()

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    mean, sq = flat.mean(0), flat.pow(2).mean(0)
    return float((mean.pow(2) / (sq + damping)).sum())


@pytest.mark.parametrize("family", ["mlp", "stage_cnn"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_eta_matches_per_example_autograd(family: str, task: str):
    spec = FAMILIES[family]()
    net = make(spec)
    net.train()
    for _ in range(3):  # running statistics of its own
        net(batch(spec, 16, seed=9))
    x = batch(spec, 20)
    y = (torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(3))
         if task == "classification" else torch.randn(20, 3, dtype=torch.float64))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = scores.eta(net, x, y, task, DAMPING)
    assert net.training  # eta scores in eval mode and restores the mode it found
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert got == pytest.approx(_reference_eta(net, x, y, task, DAMPING), rel=1e-9)


def test_natural_score_bounds():
    # Identical per-example gradients: each term is g^2 / (g^2 + damping) -> about P.
    same = torch.ones(10, 4)
    assert scores.natural_score(same, 1e-9) == pytest.approx(4.0)
    # Gradients that cancel on average carry no expected loss decrease.
    opposite = torch.cat([torch.ones(5, 4), -torch.ones(5, 4)])
    assert scores.natural_score(opposite, 1e-9) == pytest.approx(0.0)


def _grow(net, group, k, u):  # widen with U's fan-out, in widen's column layout
    _, probe_net, index_map = widen(net, group, k, {})
    x, y = torch.zeros(1), torch.zeros(1)
    probe = scores.FanOutProbe(probe_net, group, k, index_map, x, y, "classification")
    fan_out = {c: probe.weights(u)[name][:, cols]
               for c, (name, cols) in zip(group.consumers, probe.fan_out, strict=True)}
    return widen(net, group, k, fan_out)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gain_equals_eta_difference_and_gradmax_fanin(family: str):
    spec = FAMILIES[family]()
    net, (x, y) = make(spec), _data(spec)
    eta_now = scores.eta(net, x, y, "classification", DAMPING)
    gen = torch.Generator().manual_seed(0)
    for group in find_groups(spec)[:3]:
        k = group.step * 2
        _, grown, index_map = widen(net, group, k, {})
        probe = scores.FanOutProbe(grown, group, k, index_map, x, y, "classification")
        u = scores.scale_columns(scores.gradmax_fanout(probe, k, gen), 0.7)
        new_spec, new_net, new_map = _grow(net, group, k, u)
        # the fan-in gradient of the grown module equals the probe's U^T M
        new_net.eval()
        loss = per_example_loss(new_net(x), y, "classification").mean()
        params = dict(new_net.named_parameters())
        names = [n for n, _ in probe.fan_in]
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        direct = torch.cat([g[m].reshape(-1, k, *g[m].shape[1:]).transpose(0, 1).reshape(k, -1)
                            for g, (_, m) in zip(grads, probe.fan_in, strict=True)], dim=1)
        torch.testing.assert_close(probe.fanin_grad(u), direct)
        # gain = eta(grown) - eta(now), brute force
        gain = scores.gain(new_net, new_map, x, y, "classification", DAMPING)
        eta_new = scores.eta(new_net, x, y, "classification", DAMPING)
        assert gain == pytest.approx(eta_new - eta_now, rel=1e-6, abs=1e-9)
        # GradMax beats random orthogonal fan-outs of the same column norms
        best = probe.fanin_grad(u).norm()
        for _ in range(5):
            q, _ = torch.linalg.qr(torch.randn(u.shape, generator=gen, dtype=u.dtype))
            assert best >= probe.fanin_grad(scores.scale_columns(q, 0.7)).norm() - 1e-9


@pytest.mark.parametrize("family", ["secnn", "resnet", "mlp"])
def test_depth_gain_equals_eta_difference(family: str):
    spec = FAMILIES[family]()
    net, (x, y) = make(spec), _data(spec)
    eta_now = scores.eta(net, x, y, "classification", DAMPING)
    acts = [n.name for n in spec.nodes if n.op == "act"][:2]
    for after in acts:
        torch.manual_seed(5)
        _, grown, index_map = deepen(net, after)
        grown = grown.double()
        gain = scores.gain(grown, index_map, x, y, "classification", DAMPING)
        eta_new = scores.eta(grown, x, y, "classification", DAMPING)
        assert gain == pytest.approx(eta_new - eta_now, rel=1e-6, abs=1e-9)
        assert gain > 0


def test_power_iteration_finds_the_top_subspace(monkeypatch: pytest.MonkeyPatch):
    spec = secnn()
    net, (x, y) = make(spec), _data(spec, 10)
    group = find_groups(spec)[0]
    _, grown, index_map = widen(net, group, 2, {})
    probe = scores.FanOutProbe(grown, group, 2, index_map, x, y, "classification")
    gen = torch.Generator().manual_seed(0)
    exact = scores.gradmax_fanout(probe, 2, gen)
    monkeypatch.setattr(scores, "EXACT_DIM", 0)
    approx = scores.gradmax_fanout(probe, 2, gen, rounds=30)
    # the same subspace: projections onto each other keep (almost) all of the norm
    assert (exact.T @ approx).norm() ** 2 == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hook_gradients_equal_torch_func(family: str):
    """The one-pass per-example gradients (module inputs x output gradients) equal torch.func's
    for every Linear, Conv2d and eval-mode BatchNorm tensor."""
    from netsize.graph.per_example import from_hooks

    spec = FAMILIES[family]()
    net, (x, y) = make(spec), _data(spec)
    names = [n for n, _ in net.named_parameters()]
    fast = from_hooks(net, names, x, y, "classification")
    assert fast is not None  # these families hold only supported modules
    slow = scores.per_example_grads_func(net, names, x, y, "classification", chunk=3)
    for name in names:
        torch.testing.assert_close(fast[name], slow[name])
