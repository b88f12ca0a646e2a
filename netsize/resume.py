"""Resumable runs: everything a Trainer needs to continue from an epoch boundary, saved safely.

At every epoch end a run folder's `resume/` holds `state.json` (counters, the run's logs, the
optimizer's hyper-parameters and scheduler state, the current and best architectures, the
recipe) and `tensors.safetensors` (weights, optimizer moments, the best-so-far snapshot's
weights and every RNG state as uint8 bytes). Nothing is pickled, so resuming runs no code from
the folder. Restoring puts the Trainer exactly where it was: the rest of the run on the same
machine and threads gives the same events, checks and metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from netsize.errors import UserError
from netsize.files import json_default
from netsize.graph.spec import GraphSpec
from netsize.io import read_json_file, write_checkpoint_folder
from netsize.networks import build_network, spec_from_json

if TYPE_CHECKING:
    from netsize.train import Trainer

RESUME_DIR = "resume"
STATE_FILE, TENSORS_FILE = "state.json", "tensors.safetensors"
FORMAT = "netsize-resume-1"
_FIX = "start the run again with --overwrite"
# summary fields carried as they are (lists of JSON records and plain numbers)
_SUMMARY = ("history", "events", "checkpoints", "train_flops", "growth_seconds", "wall_seconds",
            "early_stopped")
_GROWER = ("initial", "events", "last_event_step", "seconds")


# ---------------------------------------------------------------------------------- capture
def capture(trainer: Trainer, run: dict[str, Any]) -> tuple[dict[str, Tensor], dict]:
    """(tensors, JSON state) of the trainer at an epoch boundary; copies, never views.

    run: what the run folder adds (the recipe as a dict, the run's name)."""
    tensors = {f"net/{k}": v for k, v in trainer.net.state_dict().items()}
    opt_state = trainer.opt.state_dict()
    moments: dict[str, dict[str, Any]] = {}
    for index, entry in opt_state["state"].items():
        moments[str(index)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt/{index}/{key}"] = value
            else:
                moments[str(index)][key] = value
    tensors.update(_rng_tensors(trainer))
    best = None
    if trainer.best is not None:
        ckpt = trainer.best[1]
        tensors.update({f"best/{k}": v for k, v in ckpt.state.items()})
        best = {"tag": ckpt.tag, "step": ckpt.step, "epoch": ckpt.epoch,
                "spec": ckpt.spec.to_dict() if ckpt.spec else None, "params": ckpt.params,
                "flops": ckpt.flops, "val_metric": ckpt.val_metric,
                "test_metric": ckpt.test_metric}
    s = trainer.summary
    state = {
        "format": FORMAT, **run, "step": trainer.step, "epoch": trainer.epoch,
        "spec": trainer.net.spec.to_dict(), "param_groups": opt_state["param_groups"],
        "moments": moments, "scheduler": trainer.sched.state_dict() if trainer.sched else None,
        "summary": {k: getattr(s, k) for k in _SUMMARY} | {"checks": s.checks},
        "grower": {k: getattr(trainer.grower, k) for k in _GROWER}, "best": best,
        "cuda_rng": "rng/cuda" in tensors,
        "scaler": trainer.stepper.scaler.state_dict() if trainer.stepper.scaler else None,
    }
    copies = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    return copies, state


def _rng_tensors(trainer: Trainer) -> dict[str, Tensor]:
    rngs = {"rng/batches": trainer.gen.get_state(), "rng/augment": trainer.aug_gen.get_state(),
            "rng/torch": torch.get_rng_state()}  # the global RNG draws dropout masks
    if trainer.device.type == "cuda":
        rngs["rng/cuda"] = torch.cuda.get_rng_state(trainer.device)
    return rngs


def save(run_dir: Path, trainer: Trainer, run: dict[str, Any]) -> None:
    """Write run_dir/resume/epoch-NNNNN/ under a new name (all or nothing), then drop the older
    ones: a kill at any moment leaves at least one whole state."""
    tensors, state = capture(trainer, run)
    text = json.dumps(state, indent=1, default=json_default)
    folder = run_dir / RESUME_DIR
    name = f"epoch-{trainer.epoch:05d}"
    write_checkpoint_folder(folder / name, tensors, text, TENSORS_FILE, STATE_FILE)
    for old in _saved(folder):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _saved(folder: Path) -> list[Path]:
    """The whole saved states in folder, oldest first (temporaries start with a dot)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("epoch-")
                  and (p / STATE_FILE).is_file() and (p / TENSORS_FILE).is_file())


def discard(run_dir: Path) -> None:
    """Remove the resume state once the run has finished (it is as large as 3 models)."""
    shutil.rmtree(run_dir / RESUME_DIR, ignore_errors=True)


# ----------------------------------------------------------------------------------- restore
def load(run_dir: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The saved (tensors, state) of run_dir; UserError when there is none or it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    saved = _saved(run_dir / RESUME_DIR)
    if not saved:
        raise UserError(f"{run_dir}: holds no resume state (it saves one at every epoch end; "
                        f"was it killed in its first epoch?); {_FIX}.")
    folder = saved[-1]
    state = read_json_file(folder / STATE_FILE, _FIX)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{folder / STATE_FILE}: not a netsize resume state; {_FIX}.")
    try:
        tensors = load_file(str(folder / TENSORS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError):
        raise UserError(f"{folder / TENSORS_FILE}: not a readable safetensors file; {_FIX}.") \
            from None
    return tensors, state


def restore(trainer: Trainer, tensors: dict[str, Tensor], state: dict[str, Any],
            where: Path) -> None:
    """Put a freshly made Trainer (same recipe and data) where the saved run stood."""
    from netsize.train import make_optimizer, make_scheduler

    try:
        spec = spec_from_json(state["spec"])
        if not isinstance(spec, GraphSpec):
            raise ValueError("not a graph network")
        net = build_network(spec)
        net.load_state_dict(_prefixed(tensors, "net/"))
        opt = make_optimizer(net, trainer.recipe.train)
        opt.load_state_dict({"state": _optimizer_moments(tensors, state["moments"]),
                             "param_groups": state["param_groups"]})
    except (KeyError, ValueError, RuntimeError, TypeError):
        raise UserError(f"{where}: the resume state does not fit its own network (damaged?); "
                        f"{_FIX}.") from None
    trainer.net = net.to(trainer.device)
    trainer.opt = opt
    trainer.sched = make_scheduler(opt, trainer.recipe.train, trainer.total_steps)
    if trainer.sched is not None and state["scheduler"] is not None:
        trainer.sched.load_state_dict(state["scheduler"])
    scaler = state.get("scaler")  # fp16's loss scale goes on where it was
    if scaler is not None and trainer.stepper.scaler is not None:
        trainer.stepper.scaler.load_state_dict(scaler)
    trainer.flops_per_example = _flops(trainer)
    trainer.step, trainer.epoch = int(state["step"]), int(state["epoch"])
    _restore_logs(trainer, state)
    trainer.best = _best(tensors, state["best"])
    _restore_rngs(trainer, tensors)


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_moments(tensors: dict[str, Tensor], plain: dict[str, dict]) -> dict[int, dict]:
    moments: dict[int, dict[str, Any]] = {int(i): dict(values) for i, values in plain.items()}
    for key, value in _prefixed(tensors, "opt/").items():
        index, name = key.split("/", 1)
        moments.setdefault(int(index), {})[name] = value
    return moments


def _flops(trainer: Trainer) -> int:
    from netsize.model import count_flops

    return count_flops(trainer.net, trainer.splits.input_shape)


def _restore_logs(trainer: Trainer, state: dict[str, Any]) -> None:
    summary = state["summary"]
    for key in _SUMMARY:
        setattr(trainer.summary, key, summary[key])
    trainer.summary.checks = trainer.grower.checks = summary["checks"]  # one list, as at start
    for key in _GROWER:
        setattr(trainer.grower, key, state["grower"][key])


def _best(tensors: dict[str, Tensor], best: dict[str, Any] | None) -> Any:
    from netsize.train import Checkpoint

    if best is None:
        return None
    spec = spec_from_json(best["spec"]) if best["spec"] is not None else None
    ckpt = Checkpoint(best["tag"], best["step"], best["epoch"], spec,  # type: ignore[arg-type]
                      _prefixed(tensors, "best/"), best["params"], best["flops"],
                      best["val_metric"], best["test_metric"])
    return (ckpt.val_metric, ckpt)


def _restore_rngs(trainer: Trainer, tensors: dict[str, Tensor]) -> None:
    trainer.gen.set_state(tensors["rng/batches"])
    trainer.aug_gen.set_state(tensors["rng/augment"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng/cuda"], trainer.device)


def first_difference(saved: Any, given: Any, key: str = "") -> str | None:
    """The first dotted key where two recipe trees differ (None when equal)."""
    if isinstance(saved, dict) and isinstance(given, dict):
        for name in sorted(set(saved) | set(given)):
            found = first_difference(saved.get(name), given.get(name),
                                     f"{key}.{name}" if key else name)
            if found:
                return found
        return None
    if isinstance(saved, float) and isinstance(given, float) and math.isclose(saved, given):
        return None
    return None if saved == given else (key or "(the whole recipe)")
