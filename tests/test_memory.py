"""The memory guard: activation counts on the meta device, the estimate, and the refusal."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from netsize import memory
from netsize.errors import UserError
from netsize.graph import presets
from netsize.graph.build import build_graph
from netsize.memory import (
    activation_elements,
    available_bytes,
    check_memory,
    estimate_training_bytes,
    graph_activation_elements,
    human,
)


def _real_count(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The same leaf-output count, taken on a real CPU forward of one example."""
    total = 0

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel()

    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    with torch.no_grad():
        module.eval()(torch.randn(1, *input_shape))
    for handle in handles:
        handle.remove()
    return total


def test_activation_elements_small_conv_net_matches_hand_count():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 4*8*8 = 256
        nn.ReLU(),  # 256
        nn.MaxPool2d(2),  # 4*4*4 = 64
        nn.Conv2d(4, 6, 3),  # 6*2*2 = 24
        nn.Flatten(),  # 24
        nn.Linear(24, 5),  # 5
    )
    net.train()
    assert activation_elements(net, (3, 8, 8)) == 256 + 256 + 64 + 24 + 24 + 5
    assert net.training and all(m.training for m in net.modules())  # modes restored
    assert all(p.device.type == "cpu" for p in net.parameters())  # module untouched


def test_activation_elements_netsize_net_matches_real_forward():
    net = build_graph(presets.cnn((3, 8, 8), 3, [[4], [8]]))  # batch norms, pooling, gap
    assert activation_elements(net, (3, 8, 8)) == _real_count(net, (3, 8, 8))


@pytest.mark.parametrize("spec", [
    presets.cnn((3, 8, 8), 3, [[4], [8]]), presets.cnn((1, 8, 8), 3, [[4], [6]], head="flatten",
                                                       hidden=[5], dropout=0.1),
    presets.secnn((3, 32, 32), 10), presets.mlp((7,), 2, [5, 4], norm="batch")])
def test_graph_activation_elements_from_shapes_match_the_forward(spec):
    net = build_graph(spec)
    assert graph_activation_elements(net) == _real_count(net, spec.input_shape)
    assert graph_activation_elements(nn.Linear(3, 2)) is None


def test_activation_elements_counts_tuple_outputs():
    lstm = nn.LSTM(4, 7, batch_first=True)  # output (1, 5, 7) plus h and c of (1, 1, 7) each
    assert activation_elements(lstm, (5, 4)) == 35 + 7 + 7


def test_activation_elements_giant_meta_linear_allocates_nothing():
    with torch.device("meta"):
        giant = nn.Linear(10**5, 10**5)  # 10**10 weights: 40 GB if it were real
    started = time.perf_counter()
    assert activation_elements(giant, (10**5,)) == 10**5
    assert time.perf_counter() - started < 5.0
    assert giant.weight.device.type == "meta"


def test_estimate_grows_linearly_with_batch_and_params():
    base = estimate_training_bytes(1000, 500, 8, 0)
    assert estimate_training_bytes(1000, 500, 16, 0) - base == 500 * 8 * 4 * 3
    assert estimate_training_bytes(2000, 500, 8, 0) - base == 1000 * 4 * 6
    assert estimate_training_bytes(1000, 500, 8, 123) - base == 123
    assert base == 1000 * 4 * 6 + 500 * 8 * 4 * 3


def test_estimate_uses_growth_cap():
    assert estimate_training_bytes(10, 0, 1, 0, max_params=1000) == 1000 * 4 * 6
    assert estimate_training_bytes(10, 0, 1, 0, max_params=None) == 10 * 4 * 6
    assert estimate_training_bytes(5000, 0, 1, 0, max_params=1000) == 5000 * 4 * 6


def test_available_bytes_reads_env_override(monkeypatch):
    monkeypatch.setenv("NETSIZE_MEMORY_BYTES", "12345")
    assert available_bytes() == 12345
    monkeypatch.setenv("NETSIZE_MEMORY_BYTES", "lots")
    with pytest.raises(UserError, match="NETSIZE_MEMORY_BYTES"):
        available_bytes()


def test_available_bytes_without_override_is_positive(monkeypatch):
    monkeypatch.delenv("NETSIZE_MEMORY_BYTES", raising=False)
    assert available_bytes() > 0


def test_available_bytes_respects_cgroup_limit(monkeypatch, tmp_path):
    monkeypatch.delenv("NETSIZE_MEMORY_BYTES", raising=False)
    limit = tmp_path / "memory.max"
    limit.write_text("1024\n")
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (limit,))
    assert available_bytes() == 1024
    limit.write_text("max\n")
    assert available_bytes() > 1024


def test_check_memory_refuses_naming_the_key(monkeypatch):
    monkeypatch.setenv("NETSIZE_MEMORY_BYTES", str(1 << 30))
    needed = estimate_training_bytes(100_000_000, 0, 1, 0)
    with pytest.raises(UserError) as err:
        check_memory(needed, "model.hidden", "a hidden layer of 100000000 units")
    message = str(err.value)
    assert message.startswith("model.hidden: a hidden layer of 100000000 units needs about")
    assert "2.2 GiB" in message and "1.0 GiB is available" in message
    assert message.endswith("lower model.hidden.")


def test_check_memory_passes_when_memory_is_large(monkeypatch):
    monkeypatch.setenv("NETSIZE_MEMORY_BYTES", str(1 << 40))
    check_memory(1 << 30, "schedule.amount", "growth")
    monkeypatch.setenv("NETSIZE_MEMORY_BYTES", "1000")
    check_memory(800, "schedule.amount", "growth")  # exactly 80% still passes
    with pytest.raises(UserError, match="schedule.amount"):
        check_memory(801, "schedule.amount", "growth")


def test_human():
    assert human(512) == "512 B"
    assert human(3 * 1024) == "3.0 KiB"
    assert human(int(12.5 * 2**20)) == "12.5 MiB"
    assert human(800 * 2**30) == "800.0 GiB"


@pytest.mark.parametrize("name", ["mlp", "stage_cnn", "flatten_cnn", "secnn", "resnet", "wrn",
                                  "vgg", "group_norm", "depthwise"])
def test_graph_flops_from_the_spec_equal_the_flop_counter(name: str):
    import graphs
    from torch.utils.flop_counter import FlopCounterMode

    from netsize.model import count_flops, graph_flops

    spec = getattr(graphs, name)()
    net = build_graph(spec).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros((1, *spec.input_shape)))
    assert graph_flops(net) == count_flops(net, spec.input_shape) == counter.get_total_flops()
    assert graph_flops(nn.Linear(3, 2)) is None
