"""ONNX export: every architecture family, grown and pruned graphs, and pruned timm and
torchvision models give ONNX files whose onnxruntime outputs equal torch's at batch 1 and 7;
the one loader reads every checkpoint kind; bad export options exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from netsize import load_checkpoint
from netsize.cli import app
from netsize.graph import presets
from netsize.graph.build import build_graph
from netsize.io import save_checkpoint
from netsize.runs.export import export_onnx

ort = pytest.importorskip("onnxruntime")
SMALL = (3, 16, 16)
FAMILIES = {
    "mlp": presets.mlp((20,), 4, [8, 6], norm="batch"),
    "stage_cnn": presets.cnn(SMALL, 4, [[4], [6]]),
    "flatten_cnn": presets.cnn(SMALL, 4, [[4], [4]], head="flatten", hidden=[8]),
    "secnn": presets.secnn(SMALL, 4, width=4),
    "wrn": presets.wrn(SMALL, 4, depth=10, width_multiplier=0.25),
    "resnet_bottleneck": presets.resnet(SMALL, 4, [1, 1], [4, 8], bottleneck=True),
    "vgg": presets.vgg(SMALL, 4, 11, width_multiplier=0.0625),
}


def _onnx_equals_torch(path: Path, net: torch.nn.Module, shape: tuple[int, ...]) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            want = net.eval()(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_and_matches_torch(family: str, tmp_path: Path):
    spec = FAMILIES[family]
    torch.manual_seed(0)
    net = build_graph(spec)
    net.train()(torch.randn(8, *spec.input_shape))  # running statistics away from 0 / 1
    save_checkpoint(tmp_path / "ck", spec, net.state_dict(), {"tag": "best"})
    result = export_onnx(tmp_path / "ck", tmp_path / "model.onnx")
    record = json.loads((tmp_path / "model.json").read_text())
    assert record["opset"] == 18 and record["checked_batches"] == [1, 7]
    assert result.max_abs_diff <= 1e-4 and result.input_shape == spec.input_shape
    _onnx_equals_torch(result.path, net, spec.input_shape)


@pytest.mark.parametrize(("kind", "name"), [("timm", "resnet18"),
                                          ("torchvision", "mobilenet_v3_small")])
def test_pruned_foreign_checkpoint_loads_and_exports(kind: str, name: str, tmp_path: Path):
    from netsize import foreign
    from netsize.architecture import ForeignModelConfig

    cfg = ForeignModelConfig(kind=kind, name=name, num_classes=4)
    torch.manual_seed(0)
    model = foreign.create_model(cfg, SMALL, 4)
    x, y = torch.randn(8, *SMALL), torch.randint(0, 4, (8,))
    pruned, structure = foreign.prune_channels(model, x[:2], "magnitude", 0.5,
                                               (x, y, "classification"))
    foreign.save_pruned(tmp_path / "ck", cfg, 4, 3, structure, pruned,
                        {"input_shape": list(SMALL)})
    loaded, meta = load_checkpoint(tmp_path / "ck")  # the one documented loader
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), pruned.eval()(x))
    result = export_onnx(tmp_path / "ck", tmp_path / "foreign.onnx")
    _onnx_equals_torch(result.path, loaded, SMALL)


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """Surgery leaves zeros (new fan-in, gamma 0 branches): move every weight off them."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("family", ["mlp", "resnet_bottleneck"])
def test_grown_and_pruned_checkpoints_export(family: str, tmp_path: Path):
    from netsize.graph.groups import find_groups
    from netsize.graph.surgery import deepen, narrow, widen

    torch.manual_seed(0)
    net = build_graph(FAMILIES[family])
    first = find_groups(net.spec)[0]
    spec, grown, _ = widen(net, first, 3, {})  # zero fan-out columns, zero fan-in rows
    spec, grown, _ = deepen(grown, first.producers[0])
    last = find_groups(spec)[-1]
    spec, pruned, _ = narrow(grown, last, torch.arange(0, last.units, 2))
    for tag, model in (("grown", grown), ("pruned", pruned)):
        model = _perturbed(model)
        model.train()(torch.randn(8, *model.spec.input_shape))  # running statistics move
        save_checkpoint(tmp_path / tag, model.spec, model.state_dict(), {"tag": tag})
        loaded, _ = load_checkpoint(tmp_path / tag)
        result = export_onnx(tmp_path / tag, tmp_path / f"{tag}.onnx")
        _onnx_equals_torch(result.path, loaded, model.spec.input_shape)


@pytest.mark.parametrize("args", [["--format", "tflite"], ["--opset", "99"],
                                  ["--input-shape", "a,b"]])
def test_bad_export_options_exit_2(args: list[str], tmp_path: Path):
    spec = FAMILIES["mlp"]
    save_checkpoint(tmp_path / "ck", spec, build_graph(spec).state_dict(), {})
    result = CliRunner().invoke(app, ["export", str(tmp_path / "ck"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "spec.json" in missing.output


def test_export_every_checkpoint_of_a_front(tmp_path: Path):
    from netsize import load_recipe, run_grow

    root = Path(__file__).resolve().parent.parent
    recipe = load_recipe(root / "recipes" / "tiny" / "mlp_iris.yaml", ["train.epochs=1"])
    result = run_grow(recipe, tmp_path / "run")
    out = CliRunner().invoke(app, ["export", "--front", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    for point in result.front:
        assert (tmp_path / "run" / point["path"] / "model.onnx").is_file()
    both = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--front",
                                    str(tmp_path / "run")])
    assert both.exit_code == 2


@pytest.mark.parametrize(("kind", "name"), [("timm", "resnet18"),
                                          ("torchvision", "mobilenet_v3_small")])
def test_grown_foreign_checkpoint_exports(kind: str, name: str, tmp_path: Path):
    # timm/torchvision models grow as graph networks (hardswish, SE gates, scale ops included)
    from netsize.architecture import ForeignModelConfig
    from netsize.foreign_graph import foreign_graph
    from netsize.graph.groups import find_groups
    from netsize.graph.surgery import widen

    torch.manual_seed(0)
    cfg = ForeignModelConfig(kind=kind, name=name, width_multiplier=0.25)
    shape = (3, 32, 32)
    net = foreign_graph(cfg, shape, 4)
    spec, grown, _ = widen(net, find_groups(net.spec)[0], 2, {})
    grown = _perturbed(grown)
    grown.train()(torch.randn(8, *shape))  # running statistics move
    save_checkpoint(tmp_path / "ck", spec, grown.state_dict(), {"tag": "event-001"})
    loaded, _ = load_checkpoint(tmp_path / "ck")
    result = export_onnx(tmp_path / "ck", tmp_path / "grown.onnx")
    _onnx_equals_torch(result.path, loaded, shape)
