"""netsize.surgery: function preservation, batch-norm bookkeeping, remap, optimizer state.

docs/design.md invariants 1 (growth preserves the function, train and eval mode, BN included) and 3
(optimizer moments survive surgery). Expected values are computed here from the weight shapes and
from plain slicing, never by calling the function under test a second time.
"""

from __future__ import annotations

import copy

import pytest
import torch

# ---------------------------------------------------------------------------------------- helpers
from nets import batch, cnn, make_net, mlp, next_weight
from torch import nn

from netsize import growth
from netsize.losses import batch_loss
from netsize.model import Net, count_params
from netsize.spec import NetSpec
from netsize.surgery import deepen, remap, widen

SPECS: dict[str, NetSpec] = {
    "mlp-relu-bn-3": mlp([5, 4, 3], "relu", norm=True),
    "mlp-relu-1": mlp([4], "relu"),
    "mlp-gelu-bn-2": mlp([4, 5], "gelu", norm=True),
    "mlp-tanh-2": mlp([5, 3], "tanh"),
    "mlp-leaky-bn-3": mlp([3, 4, 5], "leaky_relu", norm=True),
    # routes: direct, maxpool, maxpool, avgpool (8 -> 4 -> 2)
    "cnn-relu-bn-8": cnn([[3, 4], [3], [2]], (2, 8, 8), "relu", norm=True),
    # routes: maxpool (7 -> 3, floor), direct, avgpool
    "cnn-relu-odd-7": cnn([[3], [4, 2]], (3, 7, 7), "relu"),
    # routes: maxpool (7 -> 3), maxpool (3 -> 1), avgpool
    "cnn-leaky-bn-odd-7": cnn([[2], [3], [2]], (3, 7, 7), "leaky_relu", norm=True),
    # routes: direct, maxpool (6 -> 3), avgpool
    "cnn-tanh-6": cnn([[3, 2], [3]], (3, 6, 6), "tanh"),
    "cnn-gelu-bn-6": cnn([[2], [3]], (3, 6, 6), "gelu", norm=True),
    # other kernel sizes the recipe allows: 5 (centre tap 2) and 1
    "cnn-relu-bn-k5": cnn([[2], [3]], (2, 6, 6), "relu", norm=True, kernel=5),
    "cnn-relu-k1": cnn([[2, 3], [2]], (2, 5, 5), "relu", kernel=1),
}
LAYER_CASES = [(name, i) for name, spec in SPECS.items() for i in range(len(spec.layers))]
RELU_CASES = [(name, i) for name, i in LAYER_CASES if SPECS[name].activation == "relu"]


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def assert_state_equal(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    now = net.state_dict()
    assert list(now) == list(state)
    for name, value in state.items():
        assert torch.equal(now[name], value), f"{name} changed"


def outputs(net: Net, x: torch.Tensor, train: bool, keep: bool = True) -> torch.Tensor:
    """Forward in the given mode; keep=True forwards a copy in train mode, so the running-stat
    updates touch nothing we keep. The module's own mode is restored."""
    if train and keep:
        net = copy.deepcopy(net)
    was = net.training
    net.train(train)
    try:
        with torch.no_grad():
            return net(x)
    finally:
        net.train(was)


def assert_preserved(old: Net, new: Net, x: torch.Tensor, disposable: bool = True) -> None:
    """Same outputs in eval and in train mode (a disposable new net's running stats may move)."""
    for train in (False, True):
        before, after = outputs(old, x, train), outputs(new, x, train, keep=not disposable)
        assert after.shape == before.shape
        torch.testing.assert_close(after, before, atol=1e-5, rtol=0.0,
                                   msg=lambda m, t=train: f"train={t}: {m}")


BN_SPECS = [n for n, s in SPECS.items() if any(layer.norm for layer in s.layers)]


@pytest.mark.parametrize("name", BN_SPECS)
def test_batches_exercise_batch_statistics(name: str) -> None:
    """Non-vacuous: train-mode outputs differ from eval-mode ones on the test batch."""
    spec = SPECS[name]
    net = make_net(spec)
    x, _ = batch(spec)
    assert not torch.allclose(outputs(net, x, True), outputs(net, x, False), atol=1e-3)


# ----------------------------------------------------------------- 1. function preservation
WIDEN_INITS = ["gradmax", "random", "zero_out", "raw"]


WIDEN_CASES = [
    pytest.param(name, layer, init, k, id=f"{name}-L{layer}-{init}-{k}")
    for name, layer in LAYER_CASES for init in WIDEN_INITS for k in (1, 3)
]


@pytest.mark.parametrize("name,layer,init,k", WIDEN_CASES)
def test_widen_preserves_function(name: str, layer: int, init: str, k: int) -> None:
    spec = SPECS[name]
    net = make_net(spec)
    net.train()
    x, y = batch(spec)
    before = snapshot(net)
    gen = torch.Generator().manual_seed(5)
    old_w = spec.layers[layer].width
    nxt = next_weight(net, layer)
    if init == "raw":  # random fan-out, zero fan-in, straight through surgery.widen
        fan_out = torch.randn(nxt.shape[0], k, *nxt.shape[2:], generator=gen,
                              dtype=torch.float64)
        new_spec, new_net, index_map = widen(net, layer, fan_out)
    else:
        new_spec, new_net, index_map = growth.expand_width(
            net, layer, k, init, 0.5, probe_batch=(x, y, "classification"), generator=gen)

    # the spec and the module agree, and only the widened layer changed
    assert new_net.spec == new_spec
    assert new_spec.widths() == [w + (k if i == layer else 0) for i, w in enumerate(spec.widths())]
    assert new_net.training and net.training
    assert new_net.hidden[layer].op.weight.shape[0] == old_w + k
    assert next_weight(new_net, layer).shape[1] == old_w + k
    assert set(index_map) == set(new_net.state_dict())

    # parameter count: k * (fan-in + bias [+ gamma, beta]) + k * fan-out
    fan_in = net.hidden[layer].op.weight[0].numel() + 1
    fan_in += 2 if spec.layers[layer].norm else 0
    fan_out_size = nxt[:, 0].numel()
    expected = k * (fan_in + fan_out_size)
    assert count_params(new_net) == count_params(net) + expected
    assert growth.width_params(spec, layer, k) == expected

    # fan-out / fan-in of the new units are what the initialiser promises
    new_in = new_net.hidden[layer].op
    new_out = next_weight(new_net, layer)[:, old_w:]
    if init == "zero_out":
        assert torch.count_nonzero(new_out) == 0
        assert torch.count_nonzero(new_in.weight[old_w:]) > 0
    else:
        assert torch.count_nonzero(new_in.weight[old_w:]) == 0
        assert torch.count_nonzero(new_in.bias[old_w:]) == 0
        assert new_out.abs().sum(dim=tuple(d for d in range(new_out.dim()) if d != 1)).min() > 0

    assert_preserved(net, new_net, x)
    assert_state_equal(net, before)  # surgery (and the forwards above) left the old net alone
    assert net.training


@pytest.mark.parametrize("name,after", RELU_CASES, ids=[f"{n}-after{i}" for n, i in RELU_CASES])
def test_deepen_preserves_function(name: str, after: int) -> None:
    spec = SPECS[name]
    net = make_net(spec)
    net.train()
    x, _ = batch(spec)
    before = snapshot(net)
    new_spec, new_net, index_map = deepen(net, after)

    assert new_net.spec == new_spec
    assert len(new_spec.layers) == len(spec.layers) + 1
    inserted = new_spec.layers[after + 1]
    assert inserted.width == spec.layers[after].width and not inserted.norm
    assert inserted.stage == spec.layers[after].stage
    assert new_spec.layers[: after + 1] == spec.layers[: after + 1]
    assert new_spec.layers[after + 2 :] == spec.layers[after + 1 :]
    assert set(index_map) == set(new_net.state_dict())

    width = spec.layers[after].width
    taps = 1 if spec.kind == "mlp" else spec.kernel_size**2
    expected = width * width * taps + width
    assert count_params(new_net) == count_params(net) + expected
    assert growth.depth_params(spec, after) == expected

    # a true identity: for a conv only the centre tap is non-zero
    w = new_net.hidden[after + 1].op.weight.detach()
    eye = torch.eye(width, dtype=w.dtype)
    if spec.kind == "mlp":
        assert torch.equal(w, eye)
    else:
        c = spec.kernel_size // 2
        assert torch.equal(w[:, :, c, c], eye)
        w = w.clone()
        w[:, :, c, c] = 0
        assert torch.count_nonzero(w) == 0
    assert torch.count_nonzero(new_net.hidden[after + 1].op.bias) == 0

    assert_preserved(net, new_net, x)
    assert_state_equal(net, before)


@pytest.mark.parametrize("act", ["gelu", "tanh", "leaky_relu"])
def test_deepen_refuses_non_relu(act: str) -> None:
    net = make_net(mlp([4, 3], act))
    before = snapshot(net)
    with pytest.raises(ValueError, match="relu"):
        deepen(net, 0)
    assert_state_equal(net, before)


def test_growth_after_training_steps_still_preserves() -> None:
    """Widen, deepen, widen again on a trained BN net: each step is exact in both modes."""
    spec = SPECS["cnn-relu-bn-8"]
    net = make_net(spec)
    x, y = batch(spec, n=10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):  # real running stats and moved weights
        opt.zero_grad()
        batch_loss(net(x), y, "classification").backward()
        opt.step()
    gen = torch.Generator().manual_seed(3)
    _, a, _ = growth.expand_width(net, 1, 2, "gradmax", 0.5, (x, y, "classification"), gen)
    assert_preserved(net, a, x, disposable=False)
    _, b, _ = deepen(a, 1)
    assert_preserved(net, b, x, disposable=False)
    _, c, _ = growth.expand_width(b, 2, 3, "random", 0.5, (x, y, "classification"), gen)
    assert_preserved(net, c, x)
    assert c.spec.widths() == [3, 6, 9, 3, 2]


# --------------------------------------------------------------------- 2. batch-norm bookkeeping
BN_LAYER_CASES = [(n, i) for n, i in LAYER_CASES if SPECS[n].layers[i].norm]


@pytest.mark.parametrize("init", ["raw", "gradmax", "zero_out"])
@pytest.mark.parametrize("name,layer", BN_LAYER_CASES,
                         ids=[f"{n}-L{i}" for n, i in BN_LAYER_CASES])
def test_widen_keeps_bn_and_starts_new_channels_neutral(name: str, layer: int, init: str) -> None:
    spec = SPECS[name]
    net = make_net(spec)
    x, y = batch(spec)
    old_bn = copy.deepcopy(net.hidden[layer].norm)
    k = 2
    gen = torch.Generator().manual_seed(0)
    if init == "raw":
        nxt = next_weight(net, layer)
        fan_out = torch.randn(nxt.shape[0], k, *nxt.shape[2:], dtype=torch.float64)
        _, new_net, _ = widen(net, layer, fan_out)
    else:
        _, new_net, _ = growth.expand_width(net, layer, k, init, 0.5,
                                            (x, y, "classification"), gen)
    bn = new_net.hidden[layer].norm
    w = spec.layers[layer].width
    assert isinstance(bn, type(old_bn)) and bn.num_features == w + k
    expect_new = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
    for tensor, fresh in expect_new.items():
        got, old = getattr(bn, tensor).detach(), getattr(old_bn, tensor).detach()
        assert torch.equal(got[:w], old), tensor
        assert torch.equal(got[w:], torch.full((k,), fresh, dtype=got.dtype)), tensor
    assert int(bn.num_batches_tracked) == 7
    assert bn.eps == old_bn.eps and bn.momentum == old_bn.momentum
    # every other BN is untouched
    for i, hidden in enumerate(net.hidden):
        if i != layer and spec.layers[i].norm:
            for tensor in ("weight", "bias", "running_mean", "running_var"):
                assert torch.equal(getattr(new_net.hidden[i].norm, tensor),
                                   getattr(hidden.norm, tensor))


@pytest.mark.parametrize("name", ["mlp-relu-bn-3", "cnn-relu-bn-8"])
def test_deepen_keeps_and_shifts_bn(name: str) -> None:
    spec = SPECS[name]
    net = make_net(spec)
    _, new_net, _ = deepen(net, 0)
    assert isinstance(new_net.hidden[1].norm, nn.Identity)
    for old_i in range(len(spec.layers)):
        new_i = old_i if old_i == 0 else old_i + 1
        old_state = net.hidden[old_i].norm.state_dict()
        new_state = new_net.hidden[new_i].norm.state_dict()
        assert list(old_state) == list(new_state)
        for key, value in old_state.items():
            assert torch.equal(new_state[key], value), (old_i, key)


# ------------------------------------------------------------------------------------ 3. remap
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


def test_remap_none_dims_and_dtype() -> None:
    old = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    got = remap(old, (None, torch.tensor([-1, 2]), None))
    assert got.dtype == torch.float64 and got.shape == (2, 2, 4)
    assert torch.count_nonzero(got[:, 0]) == 0
    assert torch.equal(got[:, 1], old[:, 2])
    assert torch.equal(remap(old, ()), old)
    assert torch.equal(remap(old[0], (torch.tensor([-1, -1]), None)), torch.zeros(2, 4,
                                                                              dtype=old.dtype))
    ints = torch.tensor([7, 8, 9])
    assert torch.equal(remap(ints, (torch.tensor([2, -1, -1, 0]),)), torch.tensor([9, 0, 0, 7]))


# ---------------------------------------------------------------------- 4. optimizer state
