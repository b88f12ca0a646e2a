"""Shared CLI plumbing: option types, consoles, device and thread choice, run folder names."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from netsize.config import MAX_SEED
from netsize.errors import UserError

# Options shared by the commands (typer reads these annotations).
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a recipe key: --set section.key=value (repeatable).")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
SeedOption = Annotated[int | None, typer.Option(help="Override the recipe's seed.")]
ThreadsOption = Annotated[int | None, typer.Option(
    help="CPU threads for torch (default: torch's choice).")]
TrialsOption = Annotated[int | None, typer.Option(
    help="Run an Optuna study of N completed trials over the recipe's search.space.")]
StorageOption = Annotated[str | None, typer.Option(
    help="Study storage: sqlite:///PATH, postgresql://..., journal:PATH "
         "(default: study.db in the study folder).")]
OverwriteOption = Annotated[bool, typer.Option(
    help="Replace the run already in --out (a folder of your own files is never emptied).")]
StudyOption = Annotated[str | None, typer.Option(
    help="Study name to create or join (default: <command>-<name>).")]

console = Console()
err_console = Console(stderr=True)

def recipe_overrides(sets: list[str] | None, seed: int | None, *extra: str) -> list[str]:
    """--set values, then the command's own overrides, then --seed (the last one wins)."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: give a whole number from 0 to {MAX_SEED}.")
    return [*(sets or []), *extra, *([f"seed={seed}"] if seed is not None else [])]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu or cuda[:N].") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: netsize trains on cpu or cuda only; use --device cpu "
                        "or cuda[:N].")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available here; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                            "CUDA device(s); use cuda:0 or another index below that.")
    return device


def set_threads(threads: int | None) -> None:
    """--threads: CPU threads for torch (small models often run fastest on one). Without it,
    torch's default stays, with a one-line hint when other processes already keep cores busy."""
    if threads is None:
        hint = thread_hint(torch.get_num_threads(), os.cpu_count() or 1, _load())
        if hint and not torch.cuda.is_available():
            err_console.print(hint, highlight=False)
        return
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= threads <= most:
        raise UserError(f"--threads {threads}: give 1 to {most} (this machine has "
                        f"{os.cpu_count()} cores).")
    torch.set_num_threads(threads)


def _load() -> float:
    try:
        return os.getloadavg()[0]  # runnable processes, averaged over the last minute
    except OSError:  # not available on this system
        return 0.0


def thread_hint(threads: int, cores: int, load: float) -> str | None:
    """The hint when torch's threads outnumber the cores that other processes leave free
    (on a shared 2-core machine with one busy process, 2 threads ran 5-25x slower than 1)."""
    free = max(1, cores - round(load))
    if threads <= free:
        return None
    return (f"hint: other processes keep about {round(load)} of the {cores} cores busy; "
            f"torch's {threads} threads may run many times slower than --threads {free}.")


def new_run_dir(base: Path, seed: int) -> Path:
    """base/<YYYYmmdd-HHMMSS>-s<seed>, with a numeric suffix if that folder exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = base / f"{stamp}-s{seed}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = base / f"{stamp}-s{seed}-{suffix}"
    return candidate
