"""`export_onnx`: a checkpoint (netsize's own, grown, pruned, or a pruned timm/torchvision
model) as an ONNX file with a dynamic batch size, checked against the torch outputs with
onnxruntime. A JSON file beside it records the opset, the input shape and the check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from netsize.errors import UserError
from netsize.files import write_json
from netsize.io import load_checkpoint
from netsize.report import read_front

CHECK_BATCHES = (1, 7)


@dataclass
class Exported:
    path: Path
    opset: int
    input_shape: tuple[int, ...]
    max_abs_diff: float  # largest |onnxruntime - torch| over the check batches


def _modules() -> tuple[Any, Any]:
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs the export extra; install it with "
                        "pip install 'netsize[export]'.") from None
    return onnxruntime, onnxscript


def input_shape_of(net: torch.nn.Module, meta: dict[str, Any],
                   given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given is not None:
        return given
    spec = getattr(net, "spec", None)
    if spec is not None:
        return tuple(spec.input_shape)
    if isinstance(meta.get("input_shape"), list):
        return tuple(int(v) for v in meta["input_shape"])
    raise UserError("--input-shape: this checkpoint does not record its input shape; pass it, "
                    "e.g. --input-shape 3,32,32.")


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, opset: int = 18,
                input_shape: tuple[int, ...] | None = None, atol: float = 1e-4) -> Exported:
    """Write CHECKPOINT as ONNX (default: CHECKPOINT/model.onnx) and check it at batch 1 and 7."""
    ort, _ = _modules()
    folder = Path(checkpoint)
    net, meta = load_checkpoint(folder)
    net = net.eval()
    shape = input_shape_of(net, meta, input_shape)
    path = Path(out) if out is not None else folder / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), input_names=["input"],
                          output_names=["output"], dynamic_shapes=({0: batch},),
                          opset_version=opset, dynamo=True, verbose=False,
                          external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in CHECK_BATCHES:
        x = torch.randn(size, *shape, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            want = net(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        worst = max(worst, float(abs(got - want).max()))
    if worst > atol:
        raise UserError(f"{path}: onnxruntime differs from torch by {worst:.3g} (> {atol:g}); "
                        "try another --opset.")
    write_json(path.with_suffix(".json"), {"checkpoint": str(folder.absolute()), "opset": opset,
                                           "input_shape": list(shape), "dynamic": ["batch"],
                                           "checked_batches": list(CHECK_BATCHES),
                                           "max_abs_diff": worst})
    return Exported(path, opset, shape, worst)


def export_front(run_dir: str | Path, opset: int = 18) -> list[Exported]:
    """Every checkpoint on a run's front (front.json of grow, train or prune) as ONNX."""
    folder = Path(run_dir)
    try:
        paths = [folder / p["path"] for p in read_front(folder) if p.get("path")]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{folder.absolute()}: no readable front here; pass a run folder "
                        "written by netsize grow, train or prune.") from None
    return [export_onnx(path, opset=opset) for path in paths]
