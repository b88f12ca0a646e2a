"""`netsize export CHECKPOINT`: ONNX for deployment, checked against torch with onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from netsize.cli.common import console
from netsize.cli.guard import user_errors_exit_2
from netsize.errors import UserError
from netsize.runs.export import export_front, export_onnx


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(not 1 <= v <= 65_536 for v in shape):
        raise UserError(f"--input-shape {text!r}: give positive sizes, e.g. 3,32,32 or 64.")
    return shape


@user_errors_exit_2
def export(
    checkpoint: Annotated[Path | None, typer.Argument(
        help="A checkpoint folder (spec.json + weights).")] = None,
    front: Annotated[Path | None, typer.Option(
        help="A run folder: export every checkpoint on its front.")] = None,
    format_: Annotated[str, typer.Option("--format", help="Only onnx for now.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="ONNX file (default: CHECKPOINT/model.onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    input_shape: Annotated[str | None, typer.Option(
        help="Per-example input shape, e.g. 3,32,32 (default: what the checkpoint records).")]
        = None,
) -> None:
    """Export a checkpoint to ONNX with a dynamic batch size, checked with onnxruntime.

    Example: netsize export results/grow/digits/RUN/checkpoints/best
    Example: netsize export --front results/grow/digits/RUN
    """
    if format_ != "onnx":
        raise UserError(f"--format {format_!r}: netsize exports onnx.")
    if not 7 <= opset <= 23:
        raise UserError(f"--opset {opset}: give an ONNX opset from 7 to 23.")
    if (checkpoint is None) == (front is None):
        raise UserError("give a CHECKPOINT folder or --front RUN_DIR (one of them).")
    results = (export_front(front, opset) if front is not None
               else [export_onnx(checkpoint, out, opset, _shape(input_shape))])  # type: ignore
    for result in results:
        console.print(f"wrote {result.path} (opset {result.opset}, input (batch, "
                      f"{', '.join(map(str, result.input_shape))}); onnxruntime matches torch "
                      f"within {result.max_abs_diff:.2g} at batch 1 and 7)", highlight=False)
