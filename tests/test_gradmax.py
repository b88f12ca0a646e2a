"""netsize.scores: the GradMax matrix, its closed form against autograd, and the expansion gains.

Reference values come from autograd on the widened / deepened network (eval mode, float64) and
from plain linear algebra, never from the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------- helpers
from nets import cnn, mlp, next_weight
from torch import nn

from netsize import growth, scores
from netsize.model import Net, build
from netsize.spec import NetSpec
from netsize.surgery import deepen, widen

SPECS: dict[str, NetSpec] = {
    "mlp-relu-bn": mlp([5, 4, 3], "relu", norm=True),
    "mlp-gelu": mlp([4, 5], "gelu"),
    "mlp-tanh-bn": mlp([3, 4], "tanh", norm=True),
    "mlp-leaky": mlp([4, 3], "leaky_relu"),
    # routes: direct, maxpool, maxpool, avgpool (8 -> 4 -> 2)
    "cnn-relu-bn-8": cnn([[3, 4], [3], [2]], (2, 8, 8), "relu", norm=True),
    # routes: maxpool (7 -> 3, floor), direct, avgpool
    "cnn-leaky-odd-7": cnn([[3], [4, 2]], (3, 7, 7), "leaky_relu"),
    # routes: direct, maxpool (5 -> 2, floor), maxpool (2 -> 1), avgpool; gelu with BN
    "cnn-gelu-bn-odd-5": cnn([[2, 3], [2], [2]], (2, 5, 5), "gelu", norm=True),
    # other kernel sizes the recipe allows
    "cnn-relu-bn-k5": cnn([[2], [3]], (2, 6, 6), "relu", norm=True, kernel=5),
    "cnn-tanh-k1": cnn([[2, 3], [2]], (2, 5, 5), "tanh", kernel=1),
}
LAYER_CASES = [(n, i) for n, s in SPECS.items() for i in range(len(s.layers))]
LAYER_IDS = [f"{n}-L{i}" for n, i in LAYER_CASES]


def make_net(spec: NetSpec, seed: int = 0) -> Net:
    """float64, eval mode, batch norms at random non-trivial statistics."""
    torch.manual_seed(seed)
    net = build(spec).double().eval()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
                mod.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                mod.weight.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    return net


def batch(spec: NetSpec, task: str, n: int = 8,
          seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.input_shape, generator=gen, dtype=torch.float64)
    if task == "classification":
        y = torch.randint(0, spec.n_outputs, (n,), generator=gen)
    else:
        y = torch.randn(n, spec.n_outputs, generator=gen, dtype=torch.float64)
    return x, y


def loss_mean(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Independent of netsize: mean cross-entropy, or mean over examples of 0.5*|out - y|^2."""
    if task == "classification":
        return F.cross_entropy(out, y)
    return 0.5 * (out - y).pow(2).sum(1).mean()


def next_taps(net: Net, layer: int) -> tuple[int, ...]:
    return tuple(next_weight(net, layer).shape[2:])


def to_fan_out(omega: torch.Tensor, d_next: int, taps: tuple[int, ...]) -> torch.Tensor:
    """omega rows run over (out unit/channel, kh, kw): reshape to the weight's (d_next, k, ...)."""
    k = omega.shape[1]
    return omega.T.reshape(k, d_next, *taps).transpose(0, 1).contiguous()


def slope(act: str) -> float:
    return {"relu": 1.0, "leaky_relu": 0.01, "gelu": 0.5, "tanh": 1.0}[act]


def expected_scale(net: Net, layer: int) -> float:
    c = slope(net.spec.activation)
    if net.spec.layers[layer].norm:
        c /= math.sqrt(1.0 + net.hidden[layer].norm.eps)
    return c


def new_fanin_grad(new_net: Net, layer: int, old_w: int, x: torch.Tensor, y: torch.Tensor,
                   task: str) -> torch.Tensor:
    """Autograd gradient of the mean loss w.r.t. the new fan-in: (k, D_in + 1), bias last."""
    new_net.eval()
    op = new_net.hidden[layer].op
    gw, gb = torch.autograd.grad(loss_mean(new_net(x), y, task), [op.weight, op.bias])
    return torch.cat([gw[old_w:].flatten(1), gb[old_w:, None]], dim=1)


def natural(per_example: torch.Tensor, damping: float) -> float:
    """sum_i mean_n(g)^2 / (mean_n(g^2) + damping), written out here independently."""
    g = per_example.mean(0)
    fisher = (per_example**2).mean(0)
    return float((g**2 / (fisher + damping)).sum())


def per_example_grads(net: Net, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      task: str, rows: list[slice | None] | None = None) -> torch.Tensor:
    """(N, P): each example's loss gradient w.r.t. params (optionally sliced), one at a time."""
    net.eval()
    out = []
    for n in range(len(x)):
        grads = torch.autograd.grad(loss_mean(net(x[n : n + 1]), y[n : n + 1], task), params)
        if rows is not None:
            grads = tuple(g if r is None else g[r] for g, r in zip(grads, rows, strict=True))
        out.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(out)


# ------------------------------------------------------------ 5. closed form against autograd
def test_fanin_gradient_scale_values() -> None:
    for act in ("relu", "leaky_relu", "gelu", "tanh"):
        for norm in (False, True):
            net = make_net(mlp([4, 3], act, norm))
            for layer in range(2):
                got = scores.fanin_gradient_scale(net, layer)
                assert got == pytest.approx(expected_scale(net, layer), rel=1e-6)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("name,layer", LAYER_CASES, ids=LAYER_IDS)
def test_closed_form_matches_autograd(name: str, layer: int, task: str) -> None:
    spec = SPECS[name]
    net = make_net(spec)
    x, y = batch(spec, task)
    old_w = spec.layers[layer].width
    d_next = next_weight(net, layer).shape[0]
    taps = next_taps(net, layer)
    d_rows = d_next * math.prod(taps)
    k = 2
    omega = torch.randn(d_rows, k, generator=torch.Generator().manual_seed(7),
                        dtype=torch.float64)
    _, new_net, _ = widen(net, layer, to_fan_out(omega, d_next, taps))
    # the widened net computes the same function, so the probe of the old net applies
    torch.testing.assert_close(new_net(x), net(x), atol=1e-10, rtol=0)

    p = scores.probe(net, x, y, task)
    m_n = scores.fanin_gradient_matrices(net, p, layer)
    d_in = net.hidden[layer].op.weight[0].numel()
    assert m_n.shape == (len(x), d_rows, d_in + 1)
    c = scores.fanin_gradient_scale(net, layer)
    assert c == pytest.approx(expected_scale(net, layer), rel=1e-6)

    want = new_fanin_grad(new_net, layer, old_w, x, y, task)
    assert want.abs().max() > 1e-8  # not a vacuous comparison of zeros
    got = c * omega.T @ m_n.mean(0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    # per example too (the Fisher of the gains needs M_n, not only the mean)
    per = per_example_grads(new_net, [new_net.hidden[layer].op.weight,
                                      new_net.hidden[layer].op.bias], x, y, task,
                            rows=[slice(old_w, None), slice(old_w, None)])
    per = per.view(len(x), -1)
    w_part = per[:, : k * d_in].view(len(x), k, d_in)
    b_part = per[:, k * d_in :].view(len(x), k, 1)
    want_n = torch.cat([w_part, b_part], dim=2)
    got_n = c * torch.einsum("ok,nod->nkd", omega, m_n)
    torch.testing.assert_close(got_n, want_n, rtol=1e-4, atol=1e-6)


def test_fanin_matrices_do_not_touch_the_net() -> None:
    spec = SPECS["cnn-relu-bn-8"]
    net = make_net(spec)
    net.train()
    x, y = batch(spec, "classification")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    p = scores.probe(net, x, y, "classification")
    for layer in range(len(spec.layers)):
        scores.fanin_gradient_matrices(net, p, layer)
    assert net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------- 6. GradMax against random
def random_orthonormal(rows: int, k: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, k, generator=gen, dtype=torch.float64))
    return q


GM_CASES = [("mlp-relu-bn", 0), ("mlp-relu-bn", 2), ("cnn-relu-bn-8", 0), ("cnn-relu-bn-8", 1),
            ("cnn-relu-bn-8", 3), ("cnn-leaky-odd-7", 0)]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("name,layer", GM_CASES, ids=[f"{n}-L{i}" for n, i in GM_CASES])
def test_gradmax_beats_random_fanout(name: str, layer: int, k: int) -> None:
    spec = SPECS[name]
    net = make_net(spec)
    x, y = batch(spec, "classification")
    old_w = spec.layers[layer].width
    d_next = next_weight(net, layer).shape[0]
    taps = next_taps(net, layer)
    m = scores.fanin_gradient_matrices(net, scores.probe(net, x, y, "classification"),
                                       layer).mean(0)
    omega = scores.gradmax_fanout(m, k)
    assert omega.shape == (m.shape[0], k)
    torch.testing.assert_close(omega.T @ omega, torch.eye(k, dtype=omega.dtype), atol=1e-10,
                               rtol=0)

    def grad_norm(om: torch.Tensor) -> float:  # by autograd on the widened network
        _, new_net, _ = widen(net, layer, to_fan_out(om, d_next, taps))
        return float(new_fanin_grad(new_net, layer, old_w, x, y, "classification").norm())

    best = grad_norm(omega)
    # the optimum is the top-k singular values of c*M (computed here without gradmax_fanout)
    s = torch.linalg.svdvals(m)
    c = expected_scale(net, layer)
    assert best == pytest.approx(c * float(s[:k].pow(2).sum().sqrt()), rel=1e-6)
    gen = torch.Generator().manual_seed(11)
    for _ in range(5):
        assert grad_norm(random_orthonormal(m.shape[0], k, gen)) <= best * (1 + 1e-9)
    # and the columns are sign-fixed: each column's largest-magnitude entry is positive
    top = omega.gather(0, omega.abs().argmax(0, keepdim=True))
    assert (top > 0).all()


@pytest.mark.parametrize("k", [3, 5, 7])
def test_gradmax_fanout_fills_beyond_rank(k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    m = a @ b  # rank 2
    omega = scores.gradmax_fanout(m, k, generator=torch.Generator().manual_seed(1))
    assert omega.shape == (7, k)
    assert torch.isfinite(omega).all()
    torch.testing.assert_close(omega.T @ omega, torch.eye(k, dtype=m.dtype), atol=1e-10, rtol=0)
    # the first two columns span the column space of M; the rest are orthogonal to it
    col_space, _ = torch.linalg.qr(a)
    proj = col_space @ col_space.T
    torch.testing.assert_close(proj @ omega[:, :2], omega[:, :2], atol=1e-10, rtol=0)
    torch.testing.assert_close(omega[:, 2:].T @ m, torch.zeros(k - 2, 5, dtype=m.dtype),
                               atol=1e-10, rtol=0)
    # all the gradient norm M allows is captured
    assert float((omega.T @ m).norm()) == pytest.approx(float(m.norm()), rel=1e-10)



def test_gradmax_fanout_k_above_rows_gives_k_unit_columns() -> None:
    m = torch.randn(2, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    omega = scores.gradmax_fanout(m, 4, generator=torch.Generator().manual_seed(1))
    assert omega.shape == (2, 4)
    torch.testing.assert_close(omega.norm(dim=0), torch.ones(4, dtype=m.dtype))


@pytest.mark.parametrize("task,n_out", [("regression", 1), ("classification", 2)])
def test_expand_width_gradmax_k_above_head_outputs(task: str, n_out: int) -> None:
    spec = mlp([5, 3], "relu", n_out=n_out)
    net = make_net(spec)
    x, y = batch(spec, task)
    _, new_net, _ = growth.expand_width(net, 1, 4, "gradmax", 0.5, (x, y, task),
                                        torch.Generator().manual_seed(0))
    assert new_net.spec.widths() == [5, 7]
    torch.testing.assert_close(new_net(x), net(x), atol=1e-10, rtol=0)


def test_gradmax_fanout_of_zero_matrix() -> None:
    m = torch.zeros(4, 3, dtype=torch.float64)
    omega = scores.gradmax_fanout(m, 2, generator=torch.Generator().manual_seed(0))
    assert omega.shape == (4, 2) and torch.isfinite(omega).all()
    torch.testing.assert_close(omega.T @ omega, torch.eye(2, dtype=m.dtype), atol=1e-10, rtol=0)


@pytest.mark.parametrize("init", ["gradmax", "random"])
@pytest.mark.parametrize("name,layer", GM_CASES, ids=[f"{n}-L{i}" for n, i in GM_CASES])
def test_expand_width_fanout_norm_and_gradient(name: str, layer: int, init: str) -> None:
    """expand_width lays omega out in the weight correctly: its gradient is the optimum."""
    spec = SPECS[name]
    net = make_net(spec)
    x, y = batch(spec, "classification")
    old_w = spec.layers[layer].width
    k, scale = 2, 0.5
    nxt = next_weight(net, layer).detach()
    cols = nxt.transpose(0, 1).flatten(1).norm(dim=1)
    target = scale * float(cols.mean())
    _, new_net, _ = growth.expand_width(net, layer, k, init, scale, (x, y, "classification"),
                                        torch.Generator().manual_seed(3))
    fan_out = next_weight(new_net, layer)[:, old_w:].detach()
    norms = fan_out.transpose(0, 1).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((k,), target, dtype=norms.dtype), rtol=1e-5,
                               atol=0)
    if init == "gradmax":
        m = scores.fanin_gradient_matrices(net, scores.probe(net, x, y, "classification"),
                                           layer).mean(0)
        s = torch.linalg.svdvals(m)
        want = expected_scale(net, layer) * target * float(s[:k].pow(2).sum().sqrt())
        got = float(new_fanin_grad(new_net, layer, old_w, x, y, "classification").norm())
        assert got == pytest.approx(want, rel=1e-4)


# --------------------------------------------------------------- 7. natural expansion gains
GAIN_SPECS = {
    "mlp": mlp([5, 4, 3], "relu", norm=True),
    "mlp-plain": mlp([4, 3], "relu"),
    "cnn": cnn([[3, 4], [3], [2]], (2, 8, 8), "relu", norm=True),
    "cnn-odd": cnn([[3], [2]], (2, 7, 7), "relu"),
    "cnn-k5": cnn([[2], [2]], (2, 6, 6), "relu", norm=True, kernel=5),
}
DEPTH_CASES = [(n, i) for n, s in GAIN_SPECS.items() for i in range(len(s.layers))]


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("name,after", DEPTH_CASES, ids=[f"{n}-after{i}" for n, i in DEPTH_CASES])
def test_depth_gain_matches_per_example_autograd(name: str, after: int, task: str) -> None:
    spec = GAIN_SPECS[name]
    net = make_net(spec)
    x, y = batch(spec, task, n=6)
    damping = 1e-3
    got = scores.depth_gain(net, scores.probe(net, x, y, task), after, damping)
    _, new_net, _ = deepen(net, after)
    op = new_net.hidden[after + 1].op
    per = per_example_grads(new_net, [op.weight, op.bias], x, y, task)
    want = natural(per, damping)
    assert want > 1e-6
    assert got == pytest.approx(want, rel=1e-6)


WIDTH_CASES = [(n, i) for n, s in GAIN_SPECS.items() for i in range(len(s.layers))]


def _width_setup(name: str, layer: int, task: str, omega_kind: str):
    spec = GAIN_SPECS[name]
    net = make_net(spec)
    x, y = batch(spec, task, n=6)
    old_w = spec.layers[layer].width
    d_next = next_weight(net, layer).shape[0]
    taps = next_taps(net, layer)
    p = scores.probe(net, x, y, task)
    m_n = scores.fanin_gradient_matrices(net, p, layer)
    k = 2
    if omega_kind == "gradmax":
        omega = scores.gradmax_fanout(m_n.mean(0), k)
    else:
        omega = torch.randn(m_n.shape[1], k, generator=torch.Generator().manual_seed(4),
                            dtype=torch.float64)
    _, new_net, _ = widen(net, layer, to_fan_out(omega, d_next, taps))
    return net, new_net, x, y, old_w, m_n, omega


@pytest.mark.parametrize("omega_kind", ["gradmax", "random"])
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("name,layer", WIDTH_CASES, ids=[f"{n}-L{i}" for n, i in WIDTH_CASES])
def test_width_gain_matches_fanin_autograd(name: str, layer: int, task: str,
                                           omega_kind: str) -> None:
    net, new_net, x, y, old_w, m_n, omega = _width_setup(name, layer, task, omega_kind)
    damping = 1e-3
    got = scores.width_gain(net, layer, m_n, omega, damping)
    op = new_net.hidden[layer].op
    params, rows = [op.weight, op.bias], [slice(old_w, None), slice(old_w, None)]
    if new_net.spec.layers[layer].norm:  # the new beta has a gradient too; gamma's is zero
        params.append(new_net.hidden[layer].norm.bias)
        rows.append(slice(old_w, None))
    per = per_example_grads(new_net, params, x, y, task, rows=rows)
    want = natural(per, damping)
    assert want > 1e-6
    assert got == pytest.approx(want, rel=1e-6)


def _all_new_params_gain(name: str, layer: int, task: str, omega_kind: str,
                         damping: float) -> tuple[float, float]:
    """(width_gain, natural score over every new parameter: fan-in, fan-out, BN gamma/beta)."""
    net, new_net, x, y, old_w, m_n, omega = _width_setup(name, layer, task, omega_kind)
    got = scores.width_gain(net, layer, m_n, omega, damping)
    hidden = new_net.hidden[layer]
    params: list[torch.Tensor] = [hidden.op.weight, hidden.op.bias, next_weight(new_net, layer)]
    rows: list[slice | None] = [slice(old_w, None), slice(old_w, None), None]
    if net.spec.layers[layer].norm:
        params += [hidden.norm.weight, hidden.norm.bias]
        rows += [slice(old_w, None), slice(old_w, None)]
    per = per_example_grads(new_net, params, x, y, task, rows=None)
    # keep only the new entries (fan-out: the new columns of the next weight)
    n = len(x)
    parts, start = [], 0
    for prm, r in zip(params, rows, strict=True):
        g = per[:, start : start + prm.numel()].view(n, *prm.shape)
        start += prm.numel()
        parts.append((g[:, r] if r is not None else g[:, :, old_w:]).flatten(1))
    return got, natural(torch.cat(parts, dim=1), damping)


NOBN_WIDTH = [(n, i) for n, i in WIDTH_CASES if not GAIN_SPECS[n].layers[i].norm]
BN_WIDTH = [(n, i) for n, i in WIDTH_CASES if GAIN_SPECS[n].layers[i].norm]


@pytest.mark.parametrize("name,layer", NOBN_WIDTH, ids=[f"{n}-L{i}" for n, i in NOBN_WIDTH])
def test_width_gain_is_whole_gain_without_bn(name: str, layer: int) -> None:
    got, want = _all_new_params_gain(name, layer, "classification", "gradmax", 1e-3)
    assert want > 1e-6
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name,layer", BN_WIDTH, ids=[f"{n}-L{i}" for n, i in BN_WIDTH])
def test_width_gain_is_whole_gain_with_bn(name: str, layer: int) -> None:
    got, want = _all_new_params_gain(name, layer, "classification", "gradmax", 1e-3)
    assert want > 1e-6
    assert got == pytest.approx(want, rel=1e-6)


def test_gains_feed_senn_check_scores() -> None:
    """The gains senn_check records are the ones computed from per-example autograd."""
    from netsize.recipe import GrowConfig

    spec = GAIN_SPECS["mlp-plain"]
    net = make_net(spec)
    x, y = batch(spec, "classification", n=6)
    cfg = GrowConfig(candidates=["width", "depth"], increment=2, damping=1e-3)
    decision = growth.senn_check(net, x, y, "classification", cfg, params_now=100)
    by_key = {(s["kind"], s["layer"]): s["gain"] for s in decision.scored}
    for after in range(len(spec.layers)):
        _, deep, _ = deepen(net, after)
        op = deep.hidden[after + 1].op
        want = natural(per_example_grads(deep, [op.weight, op.bias], x, y, "classification"),
                       1e-3)
        assert by_key[("depth", after)] == pytest.approx(want, rel=1e-6)
    # a width gain is that of the network growth then builds: the same (rescaled) fan-out
    for cand in growth.candidates(spec, cfg, 100, seed=0):
        if cand.kind != "width":
            continue
        _, wide, _ = growth.expand(net, cand, cfg, (x, y, "classification"), torch.Generator())
        op, w = wide.hidden[cand.layer].op, spec.layers[cand.layer].width
        per = per_example_grads(wide, [op.weight, op.bias], x, y, "classification",
                                rows=[slice(w, None), slice(w, None)])
        assert by_key[("width", cand.layer)] == pytest.approx(natural(per, 1e-3), rel=1e-6)
