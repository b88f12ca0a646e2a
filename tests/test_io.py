from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from netsize.errors import UserError
from netsize.graph import presets
from netsize.graph.build import build_graph as build
from netsize.graph.check import parse_graph
from netsize.io import load_checkpoint, save_checkpoint

SPEC = presets.cnn((1, 8, 8), 10, [[4], [6]])


def _trained_net():
    net = build(SPEC)
    net.train()
    for _ in range(3):  # non-trivial batch-norm statistics
        net(torch.randn(8, 1, 8, 8))
    return net


def test_checkpoint_round_trip_is_exact(tmp_path: Path):
    net = _trained_net()
    save_checkpoint(tmp_path / "ck", SPEC, net.state_dict(), {"tag": "x", "val_metric": 0.5})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert loaded.spec == SPEC and meta["tag"] == "x"
    original, again = net.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    for key in original:
        assert torch.equal(original[key], again[key]), key
    x = torch.randn(5, 1, 8, 8)
    net.eval(), loaded.eval()
    assert torch.equal(net(x), loaded(x))


def test_checkpoint_files_are_json_and_safetensors(tmp_path: Path):
    save_checkpoint(tmp_path / "ck", SPEC, build(SPEC).state_dict(), {})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["spec.json",
                                                                    "weights.safetensors"]
    spec = json.loads((tmp_path / "ck" / "spec.json").read_text())["spec"]
    assert parse_graph(spec) == SPEC


def test_overwrite_leaves_no_temporary_folder(tmp_path: Path):
    for _ in range(2):
        save_checkpoint(tmp_path / "ck", SPEC, build(SPEC).state_dict(), {})
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


@pytest.mark.parametrize("damage", ["no_spec", "bad_json", "no_weights", "garbage_weights",
                                    "pickle_weights", "wrong_shapes"])
def test_damaged_checkpoints_give_a_user_error(tmp_path: Path, damage: str):
    folder = tmp_path / "ck"
    save_checkpoint(folder, SPEC, build(SPEC).state_dict(), {})
    weights, spec = folder / "weights.safetensors", folder / "spec.json"
    if damage == "no_spec":
        spec.unlink()
    elif damage == "bad_json":
        spec.write_text("{not json")
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "garbage_weights":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "pickle_weights":
        weights.write_bytes(pickle.dumps(build(SPEC).state_dict()))
    else:
        other = presets.cnn((1, 8, 8), 10, [[5]])
        spec.write_text(json.dumps({"spec": other.to_dict()}))
    with pytest.raises(UserError) as info:
        load_checkpoint(folder)
    assert str(folder) in str(info.value)
