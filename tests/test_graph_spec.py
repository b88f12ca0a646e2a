"""The graph vocabulary: presets have the published sizes, shapes are checked before anything is
built, specs are read strictly, and graph checkpoints reload exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from netsize.errors import UserError
from netsize.graph import presets
from netsize.graph.build import build_graph
from netsize.graph.check import parse_graph
from netsize.graph.spec import GraphSpec, Node
from netsize.io import load_checkpoint, save_checkpoint

CIFAR = (3, 32, 32)


def _count(spec: GraphSpec) -> int:
    return sum(p.numel() for p in build_graph(spec).parameters())


@pytest.mark.parametrize(("spec", "expected"), [
    (presets.secnn(CIFAR, 10), 9_024),  # SECNN's own count for its start network
    (presets.secnn(CIFAR, 10, 20), None),
    (presets.wrn(CIFAR, 10, 28, 1), 369_498),  # WRN-28-1: about 0.37M
    (presets.resnet(CIFAR, 10, [3, 3, 3], [16, 32, 64]), 272_474),  # ResNet-20: about 0.27M
    (presets.resnet(CIFAR, 10, [1, 1], [8, 16], bottleneck=True), None),
    (presets.vgg(CIFAR, 10, 11), 9_231_114),  # VGG-11 with batch norm, one linear layer
    (presets.cnn((1, 8, 8), 10, [[6], [6]]), 484),  # today's stage CNN on digits
    (presets.cnn((1, 28, 28), 10, [[8], [8]], head="flatten"), 4_626),
    (presets.mlp((64,), 10, [32, 16], norm="batch", dropout=0.1), None),
])
def test_presets_build_and_count(spec: GraphSpec, expected: int | None):
    assert spec.params() == _count(spec)
    if expected is not None:
        assert spec.params() == expected
    out = build_graph(spec).eval()(torch.zeros(2, *spec.input_shape))
    assert out.shape == (2, spec.n_outputs)


def test_secnn_structure():
    spec = presets.secnn(CIFAR, 10)
    cat = next(n for n in spec.nodes if n.op == "concat")
    assert spec.shape(cat.name) == (32, 4, 4)
    assert spec.shape(next(n for n in spec.nodes if n.op == "flatten").name) == (160,)
    assert {n.slope for n in spec.nodes if n.op == "act"} == {0.2}


def test_shapes_are_checked_before_building():
    too_deep = [Node("p1", "pool", ("input",), kind="max", kernel=2, stride=2)]
    for i in range(2, 6):
        too_deep.append(Node(f"p{i}", "pool", (f"p{i - 1}",), kind="max", kernel=2, stride=2))
    nodes = (*too_deep, Node("f", "flatten", ("p5",)), Node("o", "linear", ("f",), width=3))
    with pytest.raises(ValueError, match="p4: the image is too small"):
        GraphSpec((1, 8, 8), 3, nodes)
    with pytest.raises(ValueError, match="add needs inputs of one shape"):
        GraphSpec((4,), 2, (Node("a", "linear", ("input",), width=3),
                            Node("s", "add", ("a", "input")),
                            Node("o", "linear", ("s",), width=2)))


def test_json_round_trip_and_strict_reading():
    spec = presets.secnn(CIFAR, 10)
    raw = json.loads(json.dumps(spec.to_dict()))
    assert parse_graph(raw) == spec
    bad_width = json.loads(json.dumps(raw))
    bad_width["nodes"][0]["width"] = "16"
    with pytest.raises(ValueError, match=r"nodes\[0\]\.width"):
        parse_graph(bad_width)
    unknown = json.loads(json.dumps(raw))
    unknown["nodes"][3]["kind"] = "hunter2-secret"
    with pytest.raises(ValueError) as info:
        parse_graph(unknown)
    assert "hunter2" not in str(info.value)
    boolean = json.loads(json.dumps(raw))
    boolean["n_outputs"] = True
    with pytest.raises(ValueError, match="n_outputs"):
        parse_graph(boolean)


def test_graph_checkpoint_reloads_exactly(tmp_path: Path):
    torch.manual_seed(0)
    spec = presets.resnet((3, 16, 16), 5, [1, 1], [4, 8])
    net = build_graph(spec)
    net.train()(torch.randn(8, 3, 16, 16))  # move the running statistics
    save_checkpoint(tmp_path / "ck", spec, net.state_dict(), {"tag": "x"})
    again, meta = load_checkpoint(tmp_path / "ck")
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(net.eval()(x), again.eval()(x)) and meta["tag"] == "x"
    spec_file = tmp_path / "ck" / "spec.json"
    text = json.loads(spec_file.read_text())
    text["spec"]["nodes"][0]["width"] = 10**9
    spec_file.write_text(json.dumps(text))
    with pytest.raises(UserError, match="width"):
        load_checkpoint(tmp_path / "ck")


def test_a_new_op_is_one_entry_in_the_op_table(monkeypatch: pytest.MonkeyPatch):
    """An op added to OPS alone is read, built, run, counted and grown through like the rest."""
    from netsize.graph import ops
    from netsize.graph.groups import find_groups
    from netsize.graph.surgery import widen

    double = ops.Op(lambda node, ins, where: ins[0],
                    lambda node, ins, module: 2.0 * ins[0])  # f(0) = 0: channels pass through
    monkeypatch.setitem(ops.OPS, "double", double)
    raw = {"input_shape": [1, 6, 6], "n_outputs": 3, "kind": "graph", "nodes": [
        {"name": "c", "op": "conv", "inputs": ["input"], "width": 4, "kernel": 3, "padding": 1},
        {"name": "d", "op": "double", "inputs": ["c"]},
        {"name": "g", "op": "gap", "inputs": ["d"]},
        {"name": "o", "op": "linear", "inputs": ["g"], "width": 3}]}
    spec = parse_graph(raw)
    torch.manual_seed(0)
    net = build_graph(spec).eval()
    x = torch.randn(2, 1, 6, 6)
    (group,) = find_groups(spec)
    assert group.path == ("d", "g") and group.consumers == ("o",)
    _, grown, _ = widen(net, group, 2, {"o": torch.randn(3, 2)})
    torch.testing.assert_close(grown.eval()(x), net(x))
