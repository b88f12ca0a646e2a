"""Checkpoints as spec.json + weights.safetensors (never pickles)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from netsize.errors import UserError
from netsize.files import json_default
from netsize.model import Net, build
from netsize.spec import NetSpec

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"


def write_checkpoint_folder(folder: Path, tensors: dict[str, torch.Tensor], spec_text: str) -> None:
    """folder/weights.safetensors + folder/spec.json, all or nothing (temp folder + rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / SPEC_FILE).write_text(spec_text)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(folder: Path, spec: NetSpec, state: dict[str, torch.Tensor],
                    meta: dict[str, Any]) -> None:
    """Write folder/spec.json and folder/weights.safetensors, all or nothing."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    text = json.dumps({"spec": spec.to_dict(), **meta}, indent=2, default=json_default)
    write_checkpoint_folder(folder, tensors, text)


def read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise UserError(f"{folder}: not a netsize checkpoint (no {SPEC_FILE}); pass a folder "
                        "written by netsize, e.g. results/grow/<recipe>/<run>/checkpoints/best.")
    try:
        meta = json.loads(spec_path.read_text())
        NetSpec.from_dict(meta["spec"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"{spec_path}: corrupt checkpoint description; re-create the "
                        "checkpoint.") from None
    if not isinstance(meta, dict):
        raise UserError(f"{spec_path}: corrupt checkpoint description; re-create it.")
    return meta


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Net, dict]:
    """Rebuild the network from spec.json and fill it from weights.safetensors (no code runs)."""
    folder = Path(folder)
    meta = read_checkpoint_meta(folder)
    spec = NetSpec.from_dict(meta["spec"])
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{folder}: {WEIGHTS_FILE} is missing; re-create the checkpoint.")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError):
        raise UserError(f"{weights}: corrupt weights file; re-create the checkpoint.") from None
    net = build(spec).to(device)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise UserError(f"{weights}: the weights do not fit {SPEC_FILE} "
                        f"({spec.describe()}); re-create the checkpoint.") from None
    return net, meta
