"""Checkpoints as spec.json + weights.safetensors (never pickles)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from netsize.errors import UserError
from netsize.files import json_default
from netsize.networks import AnySpec, build_network, layer_list_as_graph, spec_from_json
from netsize.spec import NetSpec

SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.safetensors"


def write_checkpoint_folder(folder: Path, tensors: dict[str, torch.Tensor], spec_text: str,
                            weights_name: str = WEIGHTS_FILE, spec_name: str = SPEC_FILE) -> None:
    """folder/weights.safetensors + folder/spec.json, all or nothing (temp folder + rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file(tensors, str(tmp / weights_name))
        (tmp / spec_name).write_text(spec_text)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(folder: Path, spec: AnySpec, state: dict[str, torch.Tensor],
                    meta: dict[str, Any]) -> None:
    """Write folder/spec.json and folder/weights.safetensors, all or nothing."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    text = json.dumps({"spec": spec.to_dict(), **meta}, indent=2, default=json_default)
    write_checkpoint_folder(folder, tensors, text)


MAX_SPEC_BYTES = 64 * 2**20  # a spec.json is a few KiB; anything past this is not one
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_FIX = "re-create the checkpoint"


def read_json_file(path: Path, fix: str) -> Any:
    """The JSON value in path, refusing (UserError) anything too large, not UTF-8, not JSON or
    nested too deeply; the message never repeats the file's contents."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise UserError(f"{path}: cannot be read ({reason}); check that it is a readable file, "
                        f"or {fix}.") from None
    if len(data) > MAX_SPEC_BYTES:
        raise UserError(f"{path}: larger than {MAX_SPEC_BYTES // 2**20} MiB, so not a netsize "
                        f"description; {fix}.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; {fix}.") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply; {fix}.") from None
    except (ValueError, MemoryError):  # JSONDecodeError, or an integer of too many digits
        raise UserError(f"{path}: not valid JSON; {fix}.") from None


def _read_meta_and_spec(folder: Path) -> tuple[dict[str, Any], AnySpec]:
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise UserError(f"{folder}: not a netsize checkpoint (no {SPEC_FILE}); pass a folder "
                        "written by netsize, e.g. results/grow/<recipe>/<run>/checkpoints/best.")
    meta = read_json_file(spec_path, _FIX)
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise UserError(f"{spec_path}: spec: missing or not an object; the file must hold a "
                        f"JSON object whose \"spec\" key describes the network; {_FIX}.")
    try:
        spec = spec_from_json(meta["spec"])
    except ValueError as exc:
        raise UserError(f"{spec_path}: {exc}; {_FIX}.") from None
    except (TypeError, KeyError, IndexError, AttributeError, OverflowError):  # defensive
        raise UserError(f"{spec_path}: spec: malformed network description; {_FIX}.") from None
    return meta, spec


def read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    """spec.json of a checkpoint folder (a dict with a valid "spec"), or UserError."""
    return _read_meta_and_spec(Path(folder))[0]


def _read_header(path: Path, fix: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, safetensors dtype)} from a safetensors header; no tensor is read.

    safetensors checks that the header's tensors exactly cover the file, so the shapes are
    backed by bytes on disk: allocating them costs no more memory than the file's size."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {}
            for name in f.keys():
                view = f.get_slice(name)
                header[name] = (tuple(view.get_shape()), str(view.get_dtype()))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        raise UserError(f"{path}: not a readable safetensors file (corrupt?); {fix}.") from None
    return header


def check_weights(path: Path, expected: Mapping[str, torch.Tensor | list[int]], what: str,
                  fix: str) -> None:
    """UserError unless the safetensors file at path holds exactly expected's names, with the
    shapes (and, for tensors, the dtypes) expected; only its header is read. Expected names are
    listed (3 at most), names only in the file counted: the message never repeats the file."""
    header = _read_header(path, fix)

    def fits(name: str) -> bool:
        want, (shape, dtype) = expected[name], header[name]
        if isinstance(want, torch.Tensor):
            return shape == tuple(want.shape) and dtype == _DTYPES.get(want.dtype, dtype)
        return shape == tuple(want)

    missing = [k for k in expected if k not in header]
    wrong = [k for k in expected if k in header and not fits(k)]
    unexpected = sum(1 for k in header if k not in expected)
    problems = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("wrong shape or type", wrong)) if keys]
    if unexpected:
        problems.append(f"{unexpected} unexpected tensor{'s' if unexpected > 1 else ''}")
    if problems:
        raise UserError(f"{path}: the weights do not fit {what} ({'; '.join(problems)}); {fix}.")


def _is_foreign(folder: Path) -> bool:
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        return False
    raw = read_json_file(spec_path, _FIX)
    return isinstance(raw, dict) and "foreign" in raw and "spec" not in raw


def load_checkpoint(folder: str | Path,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network from spec.json and fill it from weights.safetensors (no code runs).

    Nothing real is allocated before the weights file's header is checked against the spec:
    the network is first built on the meta device (shapes only)."""
    folder = Path(folder)
    if _is_foreign(folder):  # a pruned (or grown) timm / torchvision model
        from netsize import foreign

        return foreign.load_pruned(folder)
    meta, spec = _read_meta_and_spec(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{folder}: {WEIGHTS_FILE} is missing; {_FIX}.")
    what = f"{SPEC_FILE} ({spec.describe()})"
    names: dict[str, str] | None = None  # a layer-list checkpoint's tensor names -> graph's
    if isinstance(spec, NetSpec):
        spec, names = layer_list_as_graph(spec)
    with torch.device("meta"):
        net = build_network(spec)
    expected = net.state_dict()
    if names is not None:
        expected = {old: expected[new] for old, new in names.items()}
    check_weights(weights, expected, what, _FIX)
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        raise UserError(f"{weights}: corrupt weights file; {_FIX}.") from None
    if names is not None:
        state = {names[k]: v for k, v in state.items()}
    net = net.to_empty(device=device)  # every tensor is persistent: the state fills it all
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise UserError(f"{weights}: the weights do not fit {what}; {_FIX}.") from None
    return net, meta
