"""Crafted checkpoints: every bad spec.json / weights.safetensors gives a UserError naming the file,
never a traceback, a crash or a huge allocation, and never repeats what the file holds."""

from __future__ import annotations

import json
import pickle
import random
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from graphs import as_layer_list_state, layer_list_net
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from netsize import foreign, io
from netsize.cli import app
from netsize.errors import UserError
from netsize.io import load_checkpoint, read_checkpoint_meta, save_checkpoint
from netsize.model import count_params
from netsize.recipe import ForeignModelConfig
from netsize.spec import LayerSpec, NetSpec
from netsize.spec_check import param_count

SECRET = "hunter2-secret"
MLP = NetSpec("mlp", (20,), 3, (LayerSpec(8, True), LayerSpec(6, False, 0, False)), "gelu", 0.25)
CNN = NetSpec("cnn", (2, 8, 8), 4, (LayerSpec(4, True, 0, False), LayerSpec(5, False, 1, False),
                                    LayerSpec(3, True, 1, False)), kernel_size=3)


def _old_state(spec: NetSpec) -> dict[str, torch.Tensor]:
    """A layer-list checkpoint's tensors (netsize 0.1 names), from the converted graph."""
    return as_layer_list_state(spec, layer_list_net(spec).state_dict())


def _save(folder: Path, spec: NetSpec) -> Path:
    save_checkpoint(folder, spec, _old_state(spec), {"tag": "x", "recipe": {"seed": 0}})
    return folder


@pytest.fixture
def ck(tmp_path: Path) -> Path:
    return _save(tmp_path / "ck", MLP)


def _edit_spec(folder: Path, change) -> None:
    path = folder / "spec.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(UserError) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert str(folder) in message and SECRET not in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------------- spec.json contents
@pytest.mark.parametrize("spec", [MLP, CNN, NetSpec("cnn", (3, 9, 9), 2, (LayerSpec(7, False),),
                                                    kernel_size=5)])
def test_parameter_count_from_the_numbers_matches_the_built_network(spec: NetSpec):
    assert param_count(spec) == count_params(layer_list_net(spec))
    assert NetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def _set(path: tuple, value: Any):
    def change(data: dict) -> None:
        target = data["spec"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


SPEC_CASES = {
    "empty layers": (("layers",), [], "spec.layers"),
    "empty input shape": (("input_shape",), [], "spec.input_shape"),
    "cnn shape for an mlp": (("input_shape",), [1, 4, 5], "spec.input_shape"),
    "zero features": (("input_shape",), [0], "spec.input_shape[0]"),
    "negative width": (("layers", 0, "width"), -8, "spec.layers[0].width"),
    "string width": (("layers", 1, "width"), SECRET, "spec.layers[1].width"),
    "fractional width": (("layers", 0, "width"), 8.5, "spec.layers[0].width"),
    "whole float width": (("layers", 0, "width"), 8.0, "spec.layers[0].width"),
    "boolean width": (("layers", 0, "width"), True, "spec.layers[0].width"),
    "huge width": (("layers", 0, "width"), 10**9, "spec.layers[0].width"),
    "enormous integer": (("n_outputs",), 10**400, "spec.n_outputs"),
    "zero outputs": (("n_outputs",), 0, "spec.n_outputs"),
    "unknown activation": (("activation",), SECRET, "spec.activation"),
    "unknown kind": (("kind",), SECRET, "spec.kind"),
    "dropout 2": (("dropout",), 2.0, "spec.dropout"),
    "negative dropout": (("dropout",), -0.1, "spec.dropout"),
    "dropout as text": (("dropout",), "0.1", "spec.dropout"),
    "kernel size 4": (("kernel_size",), 4, "spec.kernel_size"),
    "kernel size true": (("kernel_size",), True, "spec.kernel_size"),
    "norm as int": (("layers", 0, "norm"), 1, "spec.layers[0].norm"),
    "negative stage": (("layers", 0, "stage"), -1, "spec.layers[0].stage"),
    "layer not an object": (("layers", 1), [6, False], "spec.layers[1]"),
    "unknown spec key": ((SECRET,), 1, "spec: has an unknown key"),
    "unknown layer key": (("layers", 0, SECRET), 1, "spec.layers[0]: has an unknown key"),
    "spec a list": ((), None, "spec: missing or not an object"),
}


@pytest.mark.parametrize("case", SPEC_CASES, ids=list(SPEC_CASES))
def test_bad_spec_values_are_refused_with_the_key_named(ck: Path, case: str):
    path, value, key = SPEC_CASES[case]
    if path:
        _edit_spec(ck, _set(path, value))
    else:
        _edit_spec(ck, lambda d: d.update(spec=[1, 2, SECRET]))
    message = _refused(ck, key, "re-create the checkpoint")
    with pytest.raises(UserError):
        read_checkpoint_meta(ck)
    assert message.count(".") < 12  # one sentence: path, key, rule, fix


@pytest.mark.parametrize("what", ["layers", "kind", "n_outputs", "input_shape"])
def test_missing_spec_keys(ck: Path, what: str):
    _edit_spec(ck, lambda d: d["spec"].pop(what))
    _refused(ck, f"spec.{what}: missing")


def test_nan_dropout(ck: Path):
    text = (ck / "spec.json").read_text().replace('"dropout": 0.25', '"dropout": NaN')
    (ck / "spec.json").write_text(text)
    _refused(ck, "spec.dropout")


def test_decreasing_stage_and_too_many_stages(tmp_path: Path):
    folder = _save(tmp_path / "cnn", CNN)
    _edit_spec(folder, _set(("layers", 2, "stage"), 0))
    _refused(folder, "spec.layers[2].stage")
    _edit_spec(folder, _set(("layers", 2, "stage"), 1))
    _edit_spec(folder, lambda d: d["spec"].update(input_shape=[2, 1, 8]))  # 2 stages need >= 2
    _refused(folder, "spec.layers[1].stage", "too many stages")


def test_parameter_count_past_the_limit_is_refused_before_anything_is_built(ck: Path):
    """Each number within bounds, the product not: 512 layers of 65536 units."""
    _edit_spec(ck, lambda d: d["spec"].update(layers=[{"width": 65536, "norm": False}] * 512))
    _refused(ck, "parameters", "limit")


def test_large_valid_spec_with_small_weights_allocates_nothing(ck: Path):
    """4e9 parameters (16 GB) is within the limits: the weights header refuses it first."""
    _edit_spec(ck, lambda d: d["spec"].update(input_shape=[1_000_000], layers=[
        {"width": 4000, "norm": True, "stage": 0, "dropout": True}]))
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    _refused(ck, "weights.safetensors", "wrong shape or type", "hidden.0.op.weight")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 500_000 and time.perf_counter() - started < 5


# ------------------------------------------------------------------------- spec.json as a file
def test_deep_nesting_is_refused(ck: Path):
    (ck / "spec.json").write_text("[" * 100_000 + "]" * 100_000)
    _refused(ck, "nested too deeply")
    (ck / "spec.json").write_text('{"spec": {"layers": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    _refused(ck, "nested too deeply")


def test_non_utf8_bytes(ck: Path):
    (ck / "spec.json").write_bytes(b'{"spec": "\xff\xfe' + SECRET.encode() + b'"}')
    _refused(ck, "not UTF-8")


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"spec"', "null", "{}", '{"spec": null}',
                                  "{not json", "", f'{{"spec": "{SECRET}"'])
def test_spec_json_that_is_not_an_object_with_a_spec(ck: Path, text: str):
    (ck / "spec.json").write_text(text)
    _refused(ck)


def test_oversized_spec_json(ck: Path, monkeypatch):
    monkeypatch.setattr(io, "MAX_SPEC_BYTES", 100)
    _refused(ck, "larger than")


def test_unreadable_spec_json(ck: Path, monkeypatch):
    """Tests run as root, so chmod cannot take read permission away: Path.open refuses."""
    real_open = Path.open

    def guarded_open(self: Path, *args, **kwargs):
        if self.name == "spec.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded_open)
    _refused(ck, "spec.json", "permission denied")


def test_no_spec_json_and_a_folder_in_its_place(ck: Path):
    (ck / "spec.json").unlink()
    _refused(ck, "not a netsize checkpoint")
    (ck / "spec.json").mkdir()
    _refused(ck, "not a netsize checkpoint")


# ---------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("damage", ["missing", "random bytes", "pickle", "empty", "truncated",
                                    "a folder"])
def test_weights_that_are_not_safetensors(ck: Path, damage: str):
    weights = ck / "weights.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    if damage == "random bytes":
        weights.write_bytes(random.Random(0).randbytes(4096))
    elif damage == "pickle":
        weights.write_bytes(pickle.dumps(_old_state(MLP)))
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "a folder":
        weights.mkdir()
    _refused(ck, "weights.safetensors")


def _edit_weights(folder: Path, change) -> None:
    path = folder / "weights.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


@pytest.mark.parametrize("change, fragment", [
    (lambda s: s.update({"hidden.0.op.weight": torch.zeros(9, 20)}), "hidden.0.op.weight"),
    (lambda s: s.update({"head.bias": torch.zeros(3, dtype=torch.float64)}), "head.bias"),
    (lambda s: s.pop("head.weight"), "missing: head.weight"),
    (lambda s: s.update({SECRET: torch.zeros(1)}), "1 unexpected tensor"),
    (lambda s: s.clear() or s.update(x=torch.zeros(1)),
     "(missing: hidden.0.op.weight, hidden.0.op.bias, hidden.0.norm.weight ...; 1 unexpected "
     "tensor)"),
])
def test_weights_of_the_wrong_shape_dtype_or_names(ck: Path, change, fragment: str):
    _edit_weights(ck, change)
    _refused(ck, "weights.safetensors", fragment)


def test_weights_of_another_network(ck: Path, tmp_path: Path):
    other = _save(tmp_path / "other", CNN)
    (ck / "weights.safetensors").write_bytes((other / "weights.safetensors").read_bytes())
    _refused(ck, "do not fit spec.json (mlp 8-6)")


def test_cli_turns_a_crafted_checkpoint_into_exit_code_2(ck: Path, tmp_path: Path):
    _edit_spec(ck, _set(("activation",), SECRET))
    result = CliRunner().invoke(app, ["prune", str(ck), "--out", str(tmp_path / "out"),
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "spec.activation" in result.output and SECRET not in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------- fuzz
POOL: list[Any] = [None, True, False, 0, 1, -1, 3, 7, 2**31, -(2**63), 10**9, 10**40, 0.5, 1.0,
                   -0.0, 1e308, float("inf"), float("nan"), "", "relu", "tanh", "cnn", "mlp",
                   SECRET, [], [1], [2, 8, 8], [20], {}, {"width": 3, "norm": True}, [[[[[1]]]]]]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutate_json(data: dict, rng: random.Random) -> str:
    spec_paths = [p for p in _paths(data) if p and p[0] == "spec" and len(p) > 1]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        path, action = rng.choice(spec_paths), rng.random()
        try:
            parent = data
            for key in path[:-1]:
                parent = parent[key]
            if action < 0.2 and isinstance(parent, dict):
                parent.pop(path[-1])
            elif action < 0.3 and isinstance(parent, dict):
                parent[rng.choice([SECRET, "extra", "Width"])] = rng.choice(POOL)
            elif action < 0.4 and isinstance(parent, list):
                parent.append(rng.choice(POOL) if rng.random() < 0.5 else parent[-1])
            elif action < 0.6 and isinstance(parent[path[-1]], int | float):
                parent[path[-1]] = rng.choice([0, 1, 2, -1, 10**6, 65536, 65537, 4096, 4097])
            else:
                parent[path[-1]] = rng.choice(POOL)
        except (KeyError, IndexError, TypeError):  # an earlier mutation changed the tree
            pass
    text = json.dumps(data)
    if rng.random() < 0.1:  # deep nesting in place of one value
        depth = rng.choice([50, 5000, 200_000])
        text = text.replace('"layers": [', '"layers": ' + "[" * depth + "]" * depth + ", [", 1)
    return text


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return data[: rng.randrange(len(data) + 1)]
    if choice == 1:
        return rng.randbytes(rng.randrange(0, 200))
    if choice == 2:
        out = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if choice == 3:
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.choice([b"\xc3\x28", b"\xff", b"\x00", b"\\u", b"]"]) + data[at:]
    return data + rng.randbytes(rng.randrange(1, 16))


def _mutate_weights(folder: Path, rng: random.Random, others: list[Path]) -> None:
    path = folder / "weights.safetensors"
    choice = rng.randrange(4)
    if choice == 0:
        path.write_bytes((rng.choice(others) / "weights.safetensors").read_bytes())
        return
    if choice == 1:
        path.write_bytes(_mutate_bytes(path.read_bytes(), rng))
        return
    state = load_file(str(path))
    key = rng.choice(sorted(state))
    if choice == 2:
        shape = list(state[key].shape) or [1]
        shape[rng.randrange(len(shape))] += rng.choice([-1, 1, 5])
        state[key] = torch.zeros([max(n, 0) for n in shape])
    else:
        state[key] = state[key].to(rng.choice([torch.float64, torch.float16, torch.int64]))
    save_file(state, str(path))


def test_fuzzed_checkpoints_load_or_give_a_user_error(tmp_path: Path):
    rng = random.Random(20240611)
    bases = [_save(tmp_path / "mlp", MLP), _save(tmp_path / "cnn", CNN)]
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(300):
        base = rng.choice(bases)
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        spec_text = (base / "spec.json").read_text()
        (folder / "weights.safetensors").write_bytes((base / "weights.safetensors").read_bytes())
        kind = "none" if i % 25 == 0 else rng.choice(["json"] * 4 + ["bytes", "weights", "both"])
        if kind in ("json", "both"):
            spec_text = _mutate_json(json.loads(spec_text), rng)
        spec_bytes = spec_text.encode()
        if kind == "bytes":
            spec_bytes = _mutate_bytes(spec_bytes, rng)
        (folder / "spec.json").write_bytes(spec_bytes)
        if kind in ("weights", "both"):
            _mutate_weights(folder, rng, [b for b in bases if b != base])
        try:
            net, meta = load_checkpoint(folder)
        except UserError as exc:
            message = str(exc)
            assert str(folder) in message and SECRET not in message, (i, kind, message)
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure
            pytest.fail(f"case {i} ({kind}): {type(exc).__name__}: {exc}\n{spec_bytes[:400]!r}")
        net.eval()
        with torch.no_grad():
            out = net(torch.zeros(2, *net.spec.input_shape))
        assert out.shape == (2, net.spec.n_outputs) and isinstance(meta, dict), i
        outcomes["loaded"] += 1
    assert outcomes["refused"] >= 50 and outcomes["loaded"] >= 15, outcomes


# --------------------------------------------------------------------- pruned timm checkpoints
@pytest.fixture(scope="module")
def pruned_folder(tmp_path_factory) -> Path:
    cfg = ForeignModelConfig(kind="timm", name="test_resnet", num_classes=5)
    torch.manual_seed(0)
    model = foreign.create_model(cfg, (3, 16, 16), 5)
    folder = tmp_path_factory.mktemp("foreign") / "p"
    foreign.save_pruned(folder, cfg, 5, 3, foreign.structure_of(model), model, {"tag": "x"})
    return folder


@pytest.fixture
def pruned(pruned_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "p"
    folder.mkdir()
    for name in ("spec.json", "weights.safetensors"):
        (folder / name).write_bytes((pruned_folder / name).read_bytes())
    return folder


def _edit_pruned(folder: Path, change) -> None:
    data = json.loads((folder / "spec.json").read_text())
    change(data)
    (folder / "spec.json").write_text(json.dumps(data))


def _first_tensor(data: dict) -> str:
    return next(iter(data["structure"]["tensors"]))


FOREIGN_CASES = {
    "unknown name": (lambda d: d["foreign"].update(name=SECRET), "foreign.name"),
    "huge in_chans": (lambda d: d["foreign"].update(in_chans=10**9), "in_chans (integers"),
    "in_chans as text": (lambda d: d["foreign"].update(in_chans="3"), "in_chans (integers"),
    "no in_chans": (lambda d: d["foreign"].pop("in_chans"), "foreign.in_chans"),
    "torchvision in_chans": (lambda d: d["foreign"].update(kind="torchvision", name="resnet18",
                                                           in_chans=1), "3 channels"),
    "num_classes as bool": (lambda d: d["foreign"].update(num_classes=True), "foreign:"),
    "kind unknown": (lambda d: d["foreign"].update(kind=SECRET), "foreign:"),
    "no foreign": (lambda d: d.pop("foreign"), "foreign: missing or not an object"),
    "format": (lambda d: d["structure"].update(format=SECRET), "structure.format"),
    "huge tensor": (lambda d: d["structure"]["tensors"].update(
        {_first_tensor(d): [1_000_000, 1_000_000, 3, 3]}), "do not fit"),
    "negative dim": (lambda d: d["structure"]["tensors"].update(
        {_first_tensor(d): [-1, 3]}), "structure.tensors (entry 1)"),
    "boolean dim": (lambda d: d["structure"]["tensors"].update(
        {_first_tensor(d): [True, 3]}), "structure.tensors (entry 1)"),
    "unknown tensor": (lambda d: d["structure"]["tensors"].update({SECRET: [1]}),
                       "structure: the recorded structure does not fit"),

    "private attribute": (lambda d: d["structure"]["modules"].update(
        {"conv1": {"_parameters": 3}}), "structure.modules"),
    "non-integer attribute": (lambda d: d["structure"]["modules"].update(
        {"conv1": {"training": 1}}), "structure: the recorded structure does not fit"),
    "unknown module": (lambda d: d["structure"]["modules"].update({SECRET: {"x": 1}}),
                       "structure: the recorded structure does not fit"),
    "structure a list": (lambda d: d.update(structure=[SECRET]), "structure:"),
}


@pytest.mark.parametrize("case", FOREIGN_CASES, ids=list(FOREIGN_CASES))
def test_crafted_pruned_checkpoints(pruned: Path, case: str):
    foreign.load_pruned(pruned)  # control: the intact folder loads
    change, fragment = FOREIGN_CASES[case]
    _edit_pruned(pruned, change)
    with pytest.raises(UserError) as info:
        foreign.load_pruned(pruned)
    message = str(info.value)
    assert str(pruned) in message and SECRET not in message and fragment in message, message


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, b"\xff\xfe{}", "[1, 2]", "{"])
def test_pruned_spec_json_that_is_not_json(pruned: Path, text: str | bytes):
    path = pruned / "spec.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match="spec.json"):
        foreign.load_pruned(pruned)


@pytest.mark.parametrize("change, fragment", [
    (lambda s: s.update({"fc.bias": torch.zeros(5, dtype=torch.float64)}),
     "wrong shape or type: fc.bias"),
    (lambda s: s.pop("fc.weight"), "missing: fc.weight"),
    (lambda s: s.update({SECRET: torch.zeros(2)}), "1 unexpected tensor"),
])
def test_pruned_weights_checked_against_the_header(pruned: Path, change, fragment: str):
    _edit_weights(pruned, change)
    with pytest.raises(UserError, match="weights.safetensors") as info:
        foreign.load_pruned(pruned)
    assert fragment in str(info.value) and SECRET not in str(info.value)


def test_architecture_that_cannot_be_built_on_meta_still_checks_shapes(pruned: Path,
                                                                         monkeypatch):
    real = foreign.create_model

    def no_meta(*args):
        if torch.get_default_device().type == "meta":
            raise RuntimeError("needs real tensors")
        return real(*args)

    monkeypatch.setattr(foreign, "create_model", no_meta)
    model, _ = foreign.load_pruned(pruned)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    change, _ = FOREIGN_CASES["huge tensor"]
    _edit_pruned(pruned, change)
    with pytest.raises(UserError, match="do not fit"):
        foreign.load_pruned(pruned)
