"""Shared CLI plumbing: device choice, run folders, turning user errors into exit code 2."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
import typer
from rich.console import Console

from netsize.errors import UserError
from netsize.rundir import RunLock, prepare_run_dir

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

F = TypeVar("F", bound=Callable[..., Any])


# The folder of the command's run once known (for the error log), and whether this command
# created it (a run refused before its first checkpoint leaves no folder behind).
_run_dir: list[Path] = []
_created: list[Path] = []


def user_errors_exit_2(func: F) -> F:
    """The guard at the command edge: never a traceback on the terminal.

    A UserError is one red line on stderr and exit code 2. Anything unexpected is one line
    naming a log file that holds the traceback (in the run folder when there is one) and exit
    code 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _run_dir.clear()
        _created.clear()
        try:
            return func(*args, **kwargs)
        except UserError as error:
            _forget_empty_run()
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=UserError.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished checkpoints are kept.")
            sys.exit(130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - the one place that catches everything
            log = _write_error_log()
            err_console.print(f"[bold red]internal error:[/] {type(error).__name__}; the "
                              f"details are in {log}. Please report it with that file.",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def remember_run_dir(path: Path) -> None:
    """The run folder is where an internal error's traceback goes."""
    _run_dir[:] = [path]


def _write_error_log() -> Path:
    text = traceback.format_exc()
    folders = [*_run_dir, Path(tempfile.gettempdir())]
    for folder in folders:
        log = folder / f"netsize-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            log.write_text(text)
            return log.absolute()
        except OSError:
            continue
    return Path("(no writable folder for the log)")


def start_run_dir(path: Path, overwrite: bool = False) -> RunLock:
    """Refuse an unsafe --out, lock the folder for this process, remember it for error logs."""
    existed = path.exists()
    lock = prepare_run_dir(path, overwrite=overwrite)
    remember_run_dir(path)
    if not existed:
        _created[:] = [path]
    return lock


def _forget_empty_run() -> None:
    """Remove the folder this command created if the run was refused before any checkpoint."""
    for path in _created:
        if path.is_dir() and not (path / "checkpoints").exists():
            shutil.rmtree(path, ignore_errors=True)


def recipe_overrides(sets: list[str] | None, seed: int | None, *extra: str) -> list[str]:
    """--set values, then the command's own overrides, then --seed (the last one wins)."""
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
    """--threads: CPU threads for torch (small models often run fastest on one)."""
    if threads is None:
        return
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= threads <= most:
        raise UserError(f"--threads {threads}: give 1 to {most} (this machine has "
                        f"{os.cpu_count()} cores).")
    torch.set_num_threads(threads)


def new_run_dir(base: Path, seed: int) -> Path:
    """base/<YYYYmmdd-HHMMSS>-s<seed>, with a numeric suffix if that folder exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = base / f"{stamp}-s{seed}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = base / f"{stamp}-s{seed}-{suffix}"
    return candidate
