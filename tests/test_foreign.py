"""netsize.foreign: timm / torchvision models, foreign weights, channel pruning, save / reload."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from netsize import foreign
from netsize.errors import UserError
from netsize.recipe import ForeignModelConfig

N_CLASSES = 10
SHAPE = (3, 32, 32)
ARCHS = [("timm", "resnet18"), ("torchvision", "mobilenet_v3_small")]


def _cfg(kind: str, name: str, **kw) -> ForeignModelConfig:
    return ForeignModelConfig(kind=kind, name=name, num_classes=N_CLASSES, **kw)


def _model(kind: str = "timm", name: str = "resnet18") -> nn.Module:
    return foreign.create_model(_cfg(kind, name), SHAPE, N_CLASSES)


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_channels(model: nn.Module) -> int:
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ pruned models
@dataclass
class Case:
    cfg: ForeignModelConfig
    original: nn.Module
    before: dict[str, torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    pruned: nn.Module
    structure: dict
    reloaded: nn.Module
    meta: dict


CASES = [(arch, criterion) for arch in ARCHS for criterion in ("magnitude", "variability")]


@pytest.fixture(scope="module", params=CASES, ids=lambda p: f"{p[0][1]}-{p[1]}")
def case(request, tmp_path_factory) -> Case:
    (kind, name), criterion = request.param
    torch.manual_seed(0)
    cfg = _cfg(kind, name)
    original = foreign.create_model(cfg, SHAPE, N_CLASSES)
    before = _clone_state(original)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, N_CLASSES, (8,))
    pruned, structure = foreign.prune_channels(original, x[:2], criterion, 0.5,
                                               (x, y, "classification"))
    folder = tmp_path_factory.mktemp("pruned") / "best"
    foreign.save_pruned(folder, cfg, N_CLASSES, 3, structure, pruned, {"ratio": 0.5})
    reloaded, meta = foreign.load_pruned(folder)
    return Case(cfg, original, before, x, y, pruned, structure, reloaded, meta)


def test_pruned_model_runs_and_is_smaller(case: Case):
    original, pruned = copy.deepcopy(case.original).eval(), copy.deepcopy(case.pruned).eval()
    assert pruned(case.x).shape == (len(case.x), N_CLASSES)
    assert _n_params(pruned) < 0.8 * _n_params(original)
    assert _flops(pruned, case.x) < 0.8 * _flops(original, case.x)


def test_about_half_of_the_channels_go(case: Case):
    kept = _conv_channels(case.pruned) / _conv_channels(case.original)
    assert 0.35 <= kept <= 0.65


def test_original_model_is_unchanged(case: Case):
    assert _same_state(case.original.state_dict(), case.before)
    assert case.original.training and all(p.grad is None for p in case.original.parameters())


def test_reload_gives_identical_weights_and_outputs(case: Case):
    assert _same_state(case.reloaded.state_dict(), case.pruned.state_dict())
    assert foreign.structure_of(case.reloaded) == case.structure  # channels, groups, features
    assert case.meta["ratio"] == 0.5 and case.meta["foreign"]["name"] == case.cfg.name
    pruned, reloaded = copy.deepcopy(case.pruned).eval(), copy.deepcopy(case.reloaded).eval()
    assert torch.equal(pruned(case.x), reloaded(case.x))


def test_reloaded_model_fine_tunes(case: Case):
    model = copy.deepcopy(case.reloaded).train()
    before = _clone_state(model)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(case.x), case.y).backward()
    optimiser.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in changed)


def test_spec_json_is_plain_json(case: Case, tmp_path: Path):
    foreign.save_pruned(tmp_path / "p", case.cfg, N_CLASSES, 3, case.structure, case.pruned, {})
    spec = json.loads((tmp_path / "p" / "spec.json").read_text())
    assert spec["foreign"] == {"kind": case.cfg.kind, "name": case.cfg.name,
                               "num_classes": N_CLASSES, "in_chans": 3}
    assert spec["structure"] == case.structure
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["spec.json",
                                                                  "weights.safetensors"]


def test_save_pruned_handles_shared_tensors(tmp_path: Path):
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    net[1].weight = net[0].weight  # tied: safetensors refuses shared storage unless copied
    cfg = _cfg("timm", "resnet18")
    foreign.save_pruned(tmp_path / "p", cfg, N_CLASSES, 3, foreign.structure_of(net), net, {})
    assert _same_state(load_file(str(tmp_path / "p" / "weights.safetensors")), net.state_dict())


def test_global_scope_prunes_about_half():
    model = _model()
    x = torch.randn(2, *SHAPE)
    pruned, _ = foreign.prune_channels(model, x, "magnitude", 0.5, scope="global")
    assert 0.35 <= _conv_channels(pruned) / _conv_channels(model) <= 0.65
    assert pruned.eval()(x).shape == (2, N_CLASSES)


def test_prune_rejects_bad_arguments():
    model, x = _model(), torch.randn(2, *SHAPE)
    with pytest.raises(ValueError, match="ratio"):
        foreign.prune_channels(model, x, "magnitude", 1.0)
    with pytest.raises(ValueError, match="stats"):
        foreign.prune_channels(model, x, "variability", 0.5)


# ------------------------------------------------------------------------------------ criteria
def _planted_net() -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """Channels 0-3 of the first conv: huge weights, but a constant output (input channel 0 is
    constant) that the next conv ignores. Magnitude keeps them; the data criteria drop them."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardswish(inplace=True),
                        nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        net[0].weight[:4] = 0.0
        net[0].weight[:4, 0] = 10.0
        net[0].weight[4:, 0] = 0.0
        net[3].weight[:, :4] = 0.0
    x = torch.randn(16, 3, 8, 8)
    x[:, 0] = 1.0
    return net, x, torch.randint(0, 4, (16,))


@pytest.mark.parametrize("criterion,kept", [("magnitude", {0, 1, 2, 3}),
                                            ("variability", {4, 5, 6, 7}),
                                            ("cv", {4, 5, 6, 7}), ("taylor", {4, 5, 6, 7})])
def test_criterion_decides_which_channels_stay(criterion: str, kept: set[int]):
    net, x, y = _planted_net()
    pruned, _ = foreign.prune_channels(net, x[:2], criterion, 0.5, (x, y, "classification"))
    rows = pruned[0].weight
    assert rows.shape[0] == 4
    assert {i for i in range(8) if any(torch.equal(r, net[0].weight[i]) for r in rows)} == kept


def test_unmeasured_groups_fall_back_to_magnitude():
    net, x, _ = _planted_net()
    imp = foreign.RecordedImportance({})
    pruner = tp.pruner.BasePruner(net, x[:2], imp, pruning_ratio=0.5,
                                  ignored_layers=[net[-1]])
    pruner.step()
    assert net[0].out_channels == 4 and torch.all(net[0].weight[:, 0].abs() == 10.0)


@pytest.mark.parametrize("criterion", ["variability", "cv", "taylor"])
def test_recorded_scores_follow_their_definition(criterion: str):
    net, x, y = _planted_net()
    net[3].weight.data.normal_()  # give every channel a gradient
    imp = foreign.channel_importance(net, x[:2], criterion, (x, y, "classification"))
    assert all(p.grad is None for p in net.parameters()) and net.training
    plain = nn.Sequential(*[type(m)() if hasattr(m, "inplace") else m for m in net]).eval()
    act = plain[:2](x)  # (N, C, H, W) batch-norm output
    act.retain_grad()
    F.cross_entropy(plain[2:](act), y, reduction="sum").backward()
    flat = act.detach().transpose(0, 1).reshape(8, -1)
    expected = {"variability": flat.std(1, unbiased=False),
                "cv": flat.std(1, unbiased=False) / flat.mean(1).abs(),
                "taylor": (act * act.grad).sum((2, 3)).mean(0).abs()}[criterion]
    assert isinstance(imp, foreign.RecordedImportance)
    got = imp.scores[net[1]].float()
    assert torch.allclose(got, expected.detach(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ building
def test_create_model_shapes():
    timm_gray = foreign.create_model(ForeignModelConfig(kind="timm", name="resnet18"),
                                     (1, 32, 32), 7)
    assert timm_gray.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    tv = _model("torchvision", "mobilenet_v3_small")
    assert tv.eval()(torch.randn(2, *SHAPE)).shape == (2, N_CLASSES)


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
def test_create_model_unknown_name(kind: str):
    with pytest.raises(UserError, match="model.name") as err:
        foreign.create_model(_cfg(kind, "no_such_net"), SHAPE, N_CLASSES)
    assert "list_models" in str(err.value)


def test_torchvision_needs_three_channels():
    with pytest.raises(UserError, match="3-channel"):
        foreign.create_model(_cfg("torchvision", "mobilenet_v3_small"), (1, 32, 32), N_CLASSES)


# ------------------------------------------------------------------------------------- weights
def test_load_weights_from_safetensors(tmp_path: Path):
    source, target = _model(), _model()
    save_file(_clone_state(source), str(tmp_path / "w.safetensors"))
    assert not _same_state(source.state_dict(), target.state_dict())
    foreign.load_weights(target, tmp_path / "w.safetensors")
    assert _same_state(source.state_dict(), target.state_dict())


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module."])
def test_load_weights_from_torch_save(tmp_path: Path, wrap: str):
    source, target = _model(), _model()
    state = source.state_dict()
    obj = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3},
           "model": {"model": state}, "module.": {f"module.{k}": v for k, v in state.items()}}
    torch.save(obj[wrap], tmp_path / "w.pt")
    foreign.load_weights(target, str(tmp_path / "w.pt"))
    assert _same_state(source.state_dict(), target.state_dict())


def test_load_weights_of_another_architecture(tmp_path: Path):
    torch.save(_model("torchvision", "mobilenet_v3_small").state_dict(), tmp_path / "mnv3.pt")
    with pytest.raises(UserError, match="mnv3.pt.*do not fit"):
        foreign.load_weights(_model(), tmp_path / "mnv3.pt")
    wide = foreign.create_model(ForeignModelConfig(kind="timm", name="resnet18"), SHAPE, 1000)
    save_file(wide.state_dict(), str(tmp_path / "in1k.safetensors"))
    with pytest.raises(UserError, match=r"in1k.safetensors.*fc\.weight"):
        foreign.load_weights(_model(), tmp_path / "in1k.safetensors")


class _Payload:
    """Unpickling this creates `marker`: code that runs on load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_weights_never_runs_pickled_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    torch.save({"fc.weight": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt"):
        foreign.load_weights(_model(), tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # control: the payload is real
    assert marker.exists()


def test_load_weights_refuses_a_pickled_module(tmp_path: Path):
    torch.save(_model(), tmp_path / "module.pt")
    with pytest.raises(UserError, match="module.pt.*never unpickles"):
        foreign.load_weights(_model(), tmp_path / "module.pt")


@pytest.mark.parametrize("name", ["missing.pt", "bad.pt", "bad.safetensors", "numbers.pt"])
def test_load_weights_missing_or_corrupt(tmp_path: Path, name: str):
    if name.startswith("bad"):
        (tmp_path / name).write_bytes(b"\x80\x02garbage" * 10)
    elif name == "numbers.pt":
        torch.save({"epoch": 3, "lr": 0.1}, tmp_path / name)
    with pytest.raises(UserError, match=name):
        foreign.load_weights(_model(), tmp_path / name)


# ---------------------------------------------------------------------------------- load_pruned
@pytest.fixture(scope="module")
def small_pruned() -> tuple[ForeignModelConfig, nn.Module, dict]:
    cfg = _cfg("timm", "resnet18")
    model = foreign.create_model(cfg, SHAPE, N_CLASSES)
    pruned, structure = foreign.prune_channels(model, torch.randn(2, *SHAPE), "magnitude", 0.5)
    return cfg, pruned, structure


@pytest.fixture
def saved(small_pruned, tmp_path: Path) -> Path:
    cfg, pruned, structure = small_pruned
    foreign.save_pruned(tmp_path / "p", cfg, N_CLASSES, 3, structure, pruned, {})
    return tmp_path / "p"


def _break(folder: Path, how: str) -> None:
    spec = folder / "spec.json"
    if how == "corrupt spec":
        spec.write_text("{not json")
    elif how == "no spec":
        spec.unlink()
    elif how == "no weights":
        (folder / "weights.safetensors").unlink()
    elif how == "corrupt weights":
        (folder / "weights.safetensors").write_bytes(b"junk")
    elif how == "wrong structure":
        data = json.loads(spec.read_text())
        key = next(iter(data["structure"]["tensors"]))
        data["structure"]["tensors"][key][0] += 1
        spec.write_text(json.dumps(data))
    elif how == "unknown module":
        data = json.loads(spec.read_text())
        data["structure"]["modules"]["no.such.module"] = {"out_channels": 3}
        spec.write_text(json.dumps(data))


@pytest.mark.parametrize("how", ["corrupt spec", "no spec", "no weights", "corrupt weights",
                                 "wrong structure", "unknown module"])
def test_load_pruned_damaged_folder(saved: Path, how: str):
    foreign.load_pruned(saved)  # control: intact folder loads
    _break(saved, how)
    with pytest.raises(UserError):
        foreign.load_pruned(saved)
