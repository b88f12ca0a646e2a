"""The guard at the command edge: user errors are one line and exit 2, anything unexpected is one
line naming a log file and exit 1, never a traceback on the terminal; and the run folder of a
command (locked, and removed again if the run is refused before its first checkpoint)."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from netsize.cli.common import err_console
from netsize.errors import UserError
from netsize.rundir import RunLock, prepare_run_dir

F = TypeVar("F", bound=Callable[..., Any])


# The folder of the command's run once known (for the error log), and the folders this command
# created for it (a run refused before its first checkpoint leaves no folder behind).
_run_dir: list[Path] = []
_created: list[Path] = []
# A full or read-only disk is the user's to fix, not a bug: one line and exit code 2.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


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
        except OSError as error:
            if error.errno not in _DISK_ERRORS:
                raise
            _forget_empty_run()
            where = f" {error.filename}" if error.filename else ""
            err_console.print(f"[bold red]error:[/] cannot write{where}: {error.strerror}; free "
                              "space or choose another --out (finished files are kept whole).",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=UserError.exit_code) from None
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


def start_run_dir(path: Path, overwrite: bool = False, resume: bool = False) -> RunLock:
    """Refuse an unsafe --out, lock the folder for this process, remember it for error logs.
    resume: the folder must hold a run; its files are kept and a dead process's lock is taken."""
    path = path.absolute()
    if resume and not (path / "recipe.yaml").is_file():
        raise UserError(f"--resume {path}: not a netsize run folder (no recipe.yaml); give the "
                        "folder a grow or train run wrote.")
    made = [p for p in (path, *path.parents) if not p.exists()]  # the run folder, new parents
    lock = prepare_run_dir(path, overwrite=overwrite, resume=resume)
    remember_run_dir(path)
    _created[:] = made
    return lock


def _forget_empty_run() -> None:
    """Remove the folders this command created if the run was refused before any checkpoint:
    the run folder, then the parents made for it while they are empty."""
    if _created and _created[0].is_dir() and not (_created[0] / "checkpoints").exists():
        shutil.rmtree(_created[0], ignore_errors=True)
        for parent in _created[1:]:
            try:
                parent.rmdir()
            except OSError:
                break
