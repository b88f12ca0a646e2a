"""Run folders: refuse unsafe --out choices, lock the folder, clear what a killed run left."""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from netsize.errors import UserError

MARKER_FILE = "netsize-run.json"
LOCK_FILE = ".netsize.lock"
CHECKPOINTS = "checkpoints"
# What tempfile.mkstemp/mkdtemp(prefix=f".{name}.") make: the prefix plus 8 of [a-z0-9_].
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}$")


class RunLock:
    """Ownership of a run folder: `.netsize.lock` holding our pid, host and a private token."""

    def __init__(self, folder: Path, token: str) -> None:
        self.folder, self.path, self.token = folder, folder / LOCK_FILE, token
        self.pid = os.getpid()
        atexit.register(self.release)  # fallback when the caller forgets

    def release(self) -> None:
        """Delete the lock file if it is still ours (safe to call more than once)."""
        if os.getpid() == self.pid and _read_lock(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        atexit.unregister(self.release)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_lock(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: object) -> bool:
    """True when `pid` is another live process on this machine."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


def _temporary_with(folder: Path, name: str, text: str) -> str:
    """A new tempfile `.NAME.<random>` in `folder` holding `text`; the caller renames it."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name.lstrip('.')}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return tmp


def _take_lock(folder: Path) -> RunLock:
    """Create the lock with O_CREAT|O_EXCL; replace it atomically when its owner is gone.

    A lock from another host cannot be checked, so it counts as held.
    """
    lock, token, host = folder / LOCK_FILE, secrets.token_hex(8), socket.gethostname()
    text = json.dumps({"pid": os.getpid(), "host": host, "token": token})
    while True:
        try:
            with os.fdopen(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:
                f.write(text)
            return RunLock(folder, token)
        except FileExistsError:
            pass
        try:
            stale, age = lock.read_bytes(), time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile: try again
            continue
        owner = _read_lock(lock)
        pid, where = owner.get("pid"), owner.get("host", host)
        if _alive(pid) or where != host or (not owner and age < 5):  # empty: being written?
            on = "" if where == host else f" on {where}"
            raise UserError(f"{folder} is in use by another netsize process (pid {pid}{on}); "
                            "wait for it or choose another --out.")
        tmp = _temporary_with(folder, LOCK_FILE, text)
        try:
            if lock.read_bytes() == stale:  # nobody took it over meanwhile
                os.replace(tmp, lock)
                return RunLock(folder, token)
        except FileNotFoundError:
            pass
        Path(tmp).unlink(missing_ok=True)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def clean_stale_temporaries(folder: Path) -> int:
    """Remove `.<name>.<random>` files/folders left by tempfile under `folder`; return the count.

    Only names that mkstemp/mkdtemp make with prefix f".{name}." match; the lock never does.
    """
    removed = 0
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if name != LOCK_FILE and _TEMPORARY.match(name):
                _remove(Path(root) / name)
                removed += 1
                if name in dirs:
                    dirs.remove(name)
    return removed


def _holds_run(folder: Path) -> bool:
    return (folder / MARKER_FILE).is_file() or (folder / CHECKPOINTS).is_dir()


def _contents(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if entry.name != LOCK_FILE]


def prepare_run_dir(path: Path, overwrite: bool = False, resume: bool = False) -> RunLock:
    """Make `path` a locked run folder with a fresh marker, before a run writes anything.

    A folder holds a run when it has `netsize-run.json` or `checkpoints/`. Such a folder is
    refused unless `resume` (contents kept, stale temporaries removed) or `overwrite` (emptied,
    only once the lock is ours). A non-empty folder that holds no run is refused even with
    `overwrite`: netsize never deletes a user's own files. Every problem is a UserError.
    """
    if overwrite and resume:
        raise UserError("--overwrite and --resume contradict each other; pass only one.")
    path = Path(os.path.abspath(Path(path).expanduser()))
    try:
        for ancestor in (path, *path.parents):
            if ancestor.exists():
                if not ancestor.is_dir():
                    where = "is a file" if ancestor == path else f"lies under the file {ancestor}"
                    raise UserError(f"{path} {where}; choose another --out.")
                break
        path.mkdir(parents=True, exist_ok=True)
        if _contents(path) and not _holds_run(path):
            raise UserError(f"{path} is not empty and holds no netsize run; netsize never deletes "
                            "your files, so choose another --out.")
        lock = _take_lock(path)
    except OSError as error:
        raise UserError(f"cannot create or write to {path} ({error.strerror or error}); "
                        "choose another --out.") from None
    try:
        if _holds_run(path) and not (overwrite or resume):
            raise UserError(f"{path} already holds a netsize run; pass --overwrite to replace "
                            "it, or choose another --out.")
        for entry in _contents(path) if overwrite else []:
            _remove(entry)
        clean_stale_temporaries(path)
        marker = {"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(),
                  "command": " ".join(sys.argv)}
        os.replace(_temporary_with(path, MARKER_FILE, json.dumps(marker, indent=2) + "\n"),
                   path / MARKER_FILE)
    except BaseException as error:
        lock.release()
        if isinstance(error, OSError):
            raise UserError(f"cannot write to {path} ({error.strerror or error}); "
                            "choose another --out.") from None
        raise
    return lock
