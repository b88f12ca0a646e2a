"""Shared CLI plumbing: device choice, run folders, turning user errors into exit code 2."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
import typer
from rich.console import Console

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
StudyOption = Annotated[str | None, typer.Option(
    help="Study name to create or join (default: <command>-<name>).")]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors_exit_2(func: F) -> F:
    """Print a UserError as one red line on stderr and exit with code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=UserError.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished checkpoints are kept.")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu.")
    return device


def set_threads(threads: int | None) -> None:
    """--threads: CPU threads for torch (small models often run fastest on one)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads {threads}: give 1 or more.")
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
