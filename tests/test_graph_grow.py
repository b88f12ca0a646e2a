"""netsize.graph.grow: how new units start and how candidates are scored (float64).

- The initialisers keep the function in train and eval mode and start new units as promised:
  gradmax and random give zero fan-in and fan-out columns of fanout_scale x the mean norm of the
  existing units' fan-out; zero_out a random fan-in at PyTorch's default scale and a zero
  fan-out; new norm channels start neutral.
- GradMax on a teacher-student MLP: the grown network's fan-in gradient (autograd) is the
  optimum, the top-k singular values of M, and at least that of random orthonormal fan-outs of
  the same norms; more units than fan-out rows, or a zero M, still give finite unit fan-outs.
- The gains senn_check records are the natural score of the new entries, by one-example
  autograd; scoring and applying leave the network, its statistics and the global RNG alone;
  growth after training steps keeps the function.

Expected values come from autograd on the grown network and from plain slicing, never from the
function under test.
"""

from __future__ import annotations

import copy
import math

import graphs
import pytest
import torch
import torch.nn.functional as F
from graphs import Nodes, batch, make
from torch import Tensor, nn

from netsize.graph import grow, presets, scores
from netsize.graph.build import GraphNet
from netsize.graph.groups import Group, find_groups
from netsize.graph.spec import GraphSpec
from netsize.graph.surgery import widen
from netsize.losses import batch_loss
from netsize.model import count_params
from netsize.networks import GraphMoves
from netsize.recipe import GrowConfig
from netsize.surgery import IndexMap

F64 = torch.float64
SCALE = 0.5  # fanout_scale


# ----------------------------------------------------------------------------------- helpers
def _labels(spec: GraphSpec, n: int, seed: int = 2) -> Tensor:
    return torch.randint(0, spec.n_outputs, (n,), generator=torch.Generator().manual_seed(seed))


def _outputs(net: nn.Module, x: Tensor, train: bool) -> Tensor:
    """A forward of a copy in the given mode (running stats of `net` untouched)."""
    net = copy.deepcopy(net).train(train)
    with torch.no_grad():
        return net(x)


def _assert_preserved(old: nn.Module, new: nn.Module, x: Tensor) -> None:
    for train in (False, True):
        torch.testing.assert_close(_outputs(new, x, train), _outputs(old, x, train), atol=1e-6,
                                   rtol=0.0, msg=lambda m, t=train: f"train={t}: {m}")


def _state(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _fresh(shape: torch.Size, index: tuple[Tensor | None, ...]) -> Tensor:
    """Mask of the new entries of a tensor (-1 in the index of any dimension)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for dim, idx in enumerate(index):
        if idx is not None:
            view = [1] * len(shape)
            view[dim] = len(idx)
            mask |= (idx < 0).view(view)
    return mask


def _unit_fanout_sq(w: Tensor, group: Group, consumer: str, start: int | None,
                    units: int) -> Tensor:
    """(units,) squared norm of each unit's columns in one consumer weight, site by site; the
    units of a site sit from its offset (start None) or from `start` on (new ones, in order)."""
    total = torch.zeros(units, dtype=F64)
    at = start
    for site in group.columns_of(consumer):
        first = site.offset if at is None else at
        cols = w[:, first:first + units * site.mult].detach().double()
        total += cols.reshape(w.shape[0], units, -1).pow(2).sum(dim=(0, 2))
        if at is not None:
            at += units * site.mult
    return total


def _new_fanout_norms(new: GraphNet, group: Group, index_map: IndexMap, k: int) -> Tensor:
    total = torch.zeros(k, dtype=F64)
    for consumer in group.consumers:
        w = new.ops[consumer].weight
        cols = index_map[f"ops.{consumer}.weight"].index[1]
        new_cols = (cols < 0).nonzero().squeeze(1)  # k * mult per site, site after site
        gathered = w.index_select(1, new_cols)
        total += _unit_fanout_sq(gathered, group, consumer, 0, k)
    return total.sqrt()


def _old_fanout_norms(net: GraphNet, group: Group) -> Tensor:
    total = torch.zeros(group.units, dtype=F64)
    for consumer in group.consumers:
        total += _unit_fanout_sq(net.ops[consumer].weight, group, consumer, None, group.units)
    return total.sqrt()


def _fanin_grad(net: nn.Module, index_map: IndexMap, x: Tensor, y: Tensor, task: str) -> Tensor:
    """Autograd (eval mode) gradient of the mean loss for every new fan-in entry: the new rows
    of every tensor that gained rows (producers, norms on the way)."""
    net.eval()
    params = dict(net.named_parameters())
    names = [n for n, src in index_map.items() if n in params and src.name is not None
             and src.index and src.index[0] is not None and bool((src.index[0] < 0).any())]
    out = net(x)
    loss = F.cross_entropy(out, y) if task == "classification" else \
        0.5 * (out - y).pow(2).sum(1).mean()
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return torch.cat([g[index_map[n].index[0] < 0].flatten() for n, g in zip(names, grads,
                                                                              strict=True)])


# ------------------------------------------------------------------------------ initialisers
def _neutral(new: GraphNet, group: Group, index_map: IndexMap, old: dict[str, Tensor]) -> None:
    """New channels of the norms on the way: gamma 1, beta 0 (batch: mean 0, var 1)."""
    for name in group.path:
        module = new.ops[name] if name in new.ops else None
        if not isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm):
            continue
        rows = index_map[f"ops.{name}.weight"].index[0] < 0
        assert module.weight[rows].eq(1).all() and module.bias[rows].eq(0).all(), name
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert module.running_mean[rows].eq(0).all(), name
            assert module.running_var[rows].eq(1).all(), name
            assert torch.equal(module.num_batches_tracked, old[f"ops.{name}.num_batches_tracked"])


@pytest.mark.parametrize("init", ["gradmax", "random", "zero_out"])
@pytest.mark.parametrize("family", sorted(graphs.FAMILIES))
def test_initialisers_keep_the_function_and_start_units_as_promised(family: str, init: str):
    spec = graphs.FAMILIES[family]()
    net = make(spec).train()
    x = batch(spec, 8)
    y = _labels(spec, 8)
    before = _state(net)
    gen = torch.Generator().manual_seed(5)
    for group in find_groups(spec)[:3]:
        k = 2 * group.step
        target = SCALE * float(_old_fanout_norms(net, group).mean())
        new_spec, new, index_map = grow.grow_width(net, group, k, init, SCALE,
                                                   (x, y, "classification"), gen)
        assert new.spec == new_spec and new.training
        assert count_params(new) == new_spec.params()
        _assert_preserved(net, new, x)
        for producer in group.producers:
            rows = index_map[f"ops.{producer}.weight"].index[0] < 0
            w = new.ops[producer].weight[rows]  # new rows: (k * segments, in[, kh, kw])
            if init == "zero_out":  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), old columns only
                assert w.any() and w.abs().max() <= 1 / math.sqrt(net.ops[producer].weight[0]
                                                                  .numel())
            else:
                assert not w.any(), producer
            bias = new.ops[producer].bias
            assert bias is None or not bias[rows].any()
        norms = _new_fanout_norms(new, group, index_map, k)
        if init == "zero_out":
            assert not norms.any()
        else:
            torch.testing.assert_close(norms, torch.full((k,), target, dtype=F64), rtol=1e-6,
                                       atol=0)
        _neutral(new, group, index_map, before)
    assert all(torch.equal(v, before[n]) for n, v in net.state_dict().items())  # untouched
    assert net.training


# -------------------------------------------------------------------- GradMax, teacher-student
def _teacher_student(n: int = 48) -> tuple[GraphNet, Tensor, Tensor]:
    """A student MLP (6 -> 5 -> 4 -> 3, batch norms) after 20 Adam steps towards a random
    tanh teacher (6 -> 8 -> 3)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=gen, dtype=F64)
    w1, w2 = (torch.randn(8, 6, generator=gen, dtype=F64),
              torch.randn(3, 8, generator=gen, dtype=F64) / 3)
    y = torch.tanh(x @ w1.T) @ w2.T
    student = make(graphs.mlp())
    opt = torch.optim.Adam(student.parameters(), lr=0.01)
    for _ in range(20):
        opt.zero_grad()
        batch_loss(student(x), y, "regression").backward()
        opt.step()
    return student.eval(), x, y


def _probe(net: GraphNet, group: Group, k: int, x: Tensor, y: Tensor,
           task: str) -> scores.FanOutProbe:
    _, grown, index_map = widen(net, group, k, {})
    return scores.FanOutProbe(grown, group, k, index_map, x, y, task)


def _check_gradmax(net: GraphNet, group: Group, k: int, x: Tensor, y: Tensor,
                   task: str) -> None:
    """The grown network's fan-in gradient (autograd) is target x the norm of M's top-k
    singular values, and at least that of 5 random orthonormal fan-outs of the same norms."""
    target = SCALE * float(_old_fanout_norms(net, group).mean())
    _, grown, index_map = grow.grow_width(net, group, k, "gradmax", SCALE, (x, y, task),
                                          torch.Generator().manual_seed(0))
    best = float(_fanin_grad(grown, index_map, x, y, task).norm())
    probe = _probe(net, group, k, x, y, task)
    s = torch.linalg.svdvals(scores.gradmax_matrix(probe))
    assert s[0] > 1e-6  # not at a stationary point: a real comparison
    assert best == pytest.approx(target * float(s[:k].pow(2).sum().sqrt()), rel=1e-6)
    u = scores.gradmax_fanout(probe, k, torch.Generator().manual_seed(1))
    torch.testing.assert_close(u.T @ u, torch.eye(k, dtype=F64), atol=1e-10, rtol=0)
    assert (u.gather(0, u.abs().argmax(0, keepdim=True)) > 0).all()  # signs fixed
    gen = torch.Generator().manual_seed(11)
    for _ in range(5):  # random orthonormal fan-outs, the same column norms
        q, _ = torch.linalg.qr(torch.randn(probe.dim(), k, generator=gen, dtype=F64))
        _, other, other_map = widen(net, group, k, probe.fan_out_weights(q * target))
        assert float(_fanin_grad(other, other_map, x, y, task).norm()) <= best * (1 + 1e-9)


@pytest.mark.parametrize("k", [1, 2])
def test_gradmax_beats_random_fanouts_on_a_teacher_student_mlp(k: int):
    net, x, y = _teacher_student()
    for group in find_groups(net.spec):  # fc1 (read by fc2), fc2 (read by the output)
        _check_gradmax(net, group, k, x, y, "regression")


@pytest.mark.parametrize("k", [1, 2])
def test_gradmax_when_a_producer_reads_its_own_group(k: int):
    """A resnet deepened after a1: the residual branch conv reads a1 and is added to it, so it
    is both a producer and a consumer of the coupled group. Its new rows meet the new columns
    at zero (as widen leaves them): U is the fan-out in the consumers' old rows."""
    spec = graphs.resnet()
    net = make(spec)
    x, y = batch(spec, 8), _labels(spec, 8)
    cfg = GrowConfig(coupled=True, max_layers=64)
    cand = next(c for c in grow.candidates(spec, cfg, 0, seed=0)
                if c.kind == "depth" and c.target == "a1")
    _, net, _ = grow.build(net, cand, cfg, (x, y, "classification"))
    group = next(g for g in find_groups(net.spec) if "res1_conv" in g.producers)
    assert "res1_conv" in group.consumers
    _check_gradmax(net, group, k, x, y, "classification")


def _narrow_head_mlp(n_out: int) -> GraphSpec:
    b = Nodes()
    x = b.act("a1", b.op("fc1", "linear", "input", width=5))
    x = b.act("a2", b.op("fc2", "linear", x, width=3))
    b.op("out", "linear", x, width=n_out)
    return b.spec((6,), n_out)


@pytest.mark.parametrize("task,n_out", [("regression", 1), ("classification", 2)])
def test_gradmax_with_more_units_than_fan_out_rows(task: str, n_out: int):
    """fc2's fan-out lives in the output's n_out rows: 4 new units still get finite fan-outs
    of the target norm, the first n_out orthonormal and spanning M's column space (the fan-in
    gradient takes all of M's norm), and the function is kept."""
    spec = _narrow_head_mlp(n_out)
    net = make(spec)
    x = batch(spec, 10)
    y = torch.randn(10, n_out, dtype=F64) if task == "regression" else _labels(spec, 10)
    group = next(g for g in find_groups(spec) if g.name == "fc2")
    target = SCALE * float(_old_fanout_norms(net, group).mean())
    new_spec, new, index_map = grow.grow_width(net, group, 4, "gradmax", SCALE, (x, y, task),
                                               torch.Generator().manual_seed(0))
    assert new_spec.node("fc2").width == 7
    assert all(torch.isfinite(p).all() for p in new.parameters())
    torch.testing.assert_close(_new_fanout_norms(new, group, index_map, 4),
                               torch.full((4,), target, dtype=F64), rtol=1e-6, atol=0)
    _assert_preserved(net, new, x)
    probe = _probe(net, group, 4, x, y, task)
    assert probe.dim() == n_out
    u = scores.gradmax_fanout(probe, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(u[:, :n_out].T @ u[:, :n_out], torch.eye(n_out, dtype=F64),
                               atol=1e-10, rtol=0)
    m_norm = float(scores.gradmax_matrix(probe).norm())
    assert m_norm > 1e-6
    assert float(_fanin_grad(new, index_map, x, y, task).norm()) >= target * m_norm * (1 - 1e-9)


@pytest.mark.parametrize("exact", [True, False])
def test_gradmax_when_the_loss_gradient_is_zero(exact: bool, monkeypatch: pytest.MonkeyPatch):
    """Regression targets equal to the outputs: M = 0. The fan-out is still finite, of unit
    columns (then scaled), by the exact SVD and by power iteration."""
    if not exact:
        monkeypatch.setattr(scores, "EXACT_DIM", 0)
    spec = graphs.stage_cnn()
    net = make(spec).eval()
    x = batch(spec, 6)
    group = find_groups(spec)[0]
    _, grown, index_map = widen(net, group, 2, {})
    with torch.no_grad():
        y = grown.eval()(x)  # the very network the probe runs: out - y is exactly 0
    probe = scores.FanOutProbe(grown, group, 2, index_map, x, y, "regression")
    assert not scores.gradmax_matrix(probe).any()
    u = scores.gradmax_fanout(probe, 2, torch.Generator().manual_seed(0))
    assert torch.isfinite(u).all()
    torch.testing.assert_close(u.norm(dim=0), torch.ones(2, dtype=F64))
    _, new, _ = grow.grow_width(net, group, 2, "gradmax", SCALE, (x, y, "regression"),
                                torch.Generator().manual_seed(0))
    assert all(torch.isfinite(p).all() for p in new.parameters())
    _assert_preserved(net, new, x)


# ---------------------------------------------------------------------------------- scoring
def _natural(per_example: Tensor, damping: float) -> float:
    """sum_i mean_n(g)^2 / (mean_n(g^2) + damping), written out here independently."""
    g = per_example.mean(0)
    return float((g.pow(2) / (per_example.pow(2).mean(0) + damping)).sum())


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("init", ["gradmax", "zero_out"])
def test_senn_gains_are_natural_scores_of_the_new_entries(init: str, task: str):
    spec = graphs.mlp()
    net = make(spec)
    x = batch(spec, 6)
    y = _labels(spec, 6) if task == "classification" else \
        torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    cfg = GrowConfig(candidates=["width", "depth"], increment=2, damping=1e-3, init=init,
                     tau=1e9)
    decision = grow.senn_check(net, (x, y, task), cfg, count_params(net), seed=0)
    gains = {(s["kind"], s["target"]): s["gain"] for s in decision.scored}
    kinds = set()
    for cand in grow.candidates(spec, cfg, count_params(net), seed=0):
        _, grown, index_map = grow.build(net, cand, cfg, (x, y, task))
        grown.eval()
        named = list(grown.named_parameters())
        rows = []
        for i in range(len(x)):  # one example at a time
            out = grown(x[i:i + 1])
            loss = F.cross_entropy(out, y[i:i + 1]) if task == "classification" else \
                0.5 * (out - y[i:i + 1]).pow(2).sum()
            grads = torch.autograd.grad(loss, [p for _, p in named])
            parts = []
            for (name, p), g in zip(named, grads, strict=True):
                src = index_map[name]
                parts.append(g.flatten() if src.name is None else g[_fresh(p.shape, src.index)])
            rows.append(torch.cat(parts))
        want = _natural(torch.stack(rows), 1e-3)
        assert want > 1e-8
        assert gains[(cand.kind, cand.target)] == pytest.approx(want, rel=1e-6)
        kinds.add(cand.kind)
    assert kinds == {"width", "depth"}


@pytest.mark.parametrize("family", ["stage_cnn", "secnn", "resnet"])
def test_scoring_and_applying_leave_the_network_alone(family: str):
    """A check and a move on a training-mode network: its weights and running statistics,
    its mode and the global RNG (dropout, batch order) are as they were."""
    spec = graphs.FAMILIES[family]()
    net = make(spec).train()
    x, y = batch(spec, 8), _labels(spec, 8)
    before = _state(net)
    rng = torch.random.get_rng_state()
    cfg = GrowConfig(candidates=["width", "depth"], increment=2, init="random", tau=1.0,
                     coupled=True, max_layers=64)
    decision = grow.senn_check(net, (x, y, "classification"), cfg, count_params(net), seed=0)
    assert decision.chosen is not None
    GraphMoves.apply(net, decision, cfg, (x, y, "classification"), torch.Generator())
    for move in grow.schedule_changes(net, {}, cfg.model_copy(update={"init": "gradmax"}),
                                      count_params(net), seed=1):
        GraphMoves.apply(net, move, cfg, (x, y, "classification"), torch.Generator())
    assert net.training and all(m.training for m in net.modules())
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_growth_after_training_steps_keeps_the_function():
    """Widen (gradmax), deepen, widen a coupled group (random) on a trained batch-norm resnet:
    each step is exact against the trained network in both modes."""
    spec = graphs.resnet()
    net = make(spec)
    x, y = batch(spec, 10), _labels(spec, 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):  # real running stats and moved weights
        opt.zero_grad()
        batch_loss(net(x), y, "classification").backward()
        opt.step()
    data = (x, y, "classification")
    cfg = GrowConfig(init="gradmax", coupled=True)
    free = next(g for g in find_groups(spec) if not g.coupled)
    _, a, _ = grow.grow_width(net, free, 2, "gradmax", SCALE, data, torch.Generator())
    _assert_preserved(net, a, x)
    depth = next(c for c in grow.candidates(a.spec, cfg.model_copy(update={"max_layers": 64}),
                                            0, seed=4) if c.kind == "depth")
    _, b, _ = grow.build(a, depth, cfg, data)
    _assert_preserved(net, b, x)
    coupled = next(g for g in find_groups(b.spec) if g.coupled)
    _, c, _ = grow.grow_width(b, coupled, 3, "random", SCALE, data,
                              torch.Generator().manual_seed(1))
    _assert_preserved(net, c, x)
    assert c.spec.params() > b.spec.params() > a.spec.params() > spec.params()


@pytest.mark.parametrize("init", ["gradmax", "random", "zero_out"])
def test_width_events_record_the_new_fan_in_gradient(init: str):
    """The event's fanin_grad_norm is autograd's gradient norm of the new fan-in on the batch
    (a biasless MLP, GradMax's teacher-student student): zero for a zero fan-out, at least
    random orthonormal fan-outs' for GradMax (checked above), positive otherwise."""
    spec = presets.mlp((6,), 3, [5], bias=False)
    assert not any(n.endswith("bias") for n, _ in make(spec).named_parameters())
    net, x = make(spec), batch(spec, 16)
    y = torch.randn(16, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    cfg = GrowConfig(init=init, increment=2, candidates=["width"])
    cand = grow.candidates(spec, cfg, 0, seed=0)[0]
    grown, index_map, record = GraphMoves.apply(net, cand, cfg, (x, y, "regression"),
                                                torch.Generator().manual_seed(0))
    expected = float(_fanin_grad(grown, index_map, x, y, "regression").norm())
    assert record["fanin_grad_norm"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert (expected == 0.0) == (init == "zero_out")


def test_gradmax_matrix_is_the_papers_closed_form_on_a_biasless_mlp():
    """GradMax's M for a hidden layer of an MLP read by the output layer is
    mean_n (dL/dz_out,n) x_n^T (f'(0) = 1); with 0.5 |out - y|^2 per example, dL/dz_out,n =
    out_n - y_n. The fan-out GradMax applies is M's top left singular vector, scaled."""
    spec = presets.mlp((6,), 3, [5], bias=False)
    net, x = make(spec), batch(spec, 32)
    y = torch.randn(32, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        closed = (net(x) - y).T @ x / len(x)  # (out, in)
    group = find_groups(spec)[0]
    probe = _probe(net, group, 1, x, y, "regression")
    torch.testing.assert_close(scores.gradmax_matrix(probe), closed, atol=1e-12, rtol=0)
    top = torch.linalg.svd(closed)[0][:, 0]
    _, grown, index_map = grow.grow_width(net, group, 1, "gradmax", SCALE, (x, y, "regression"),
                                          torch.Generator().manual_seed(0))
    new_column = grown.ops["fc2"].weight[:, index_map["ops.fc2.weight"].index[1] < 0][:, 0]
    target = SCALE * float(_old_fanout_norms(net, group).mean())
    torch.testing.assert_close(new_column.abs(), target * top.abs(), atol=1e-10, rtol=0)
