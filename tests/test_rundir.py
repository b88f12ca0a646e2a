"""Run folders: refusals, the lock, overwrite/resume, stale temporaries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netsize.errors import UserError
from netsize.rundir import (
    LOCK_FILE,
    MARKER_FILE,
    RunLock,
    clean_stale_temporaries,
    prepare_run_dir,
)


def _write_lock(folder: Path, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def _run_folder(folder: Path) -> None:
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "best" / "spec.json").write_text("{}")
    (folder / "history.csv").write_text("step\n")


def test_fresh_folder_gets_marker_and_lock(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with prepare_run_dir(out) as lock:
        assert isinstance(lock, RunLock)
        marker = json.loads((out / MARKER_FILE).read_text())
        assert marker["pid"] == os.getpid() and marker["started"] and "command" in marker
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()
    assert (out / MARKER_FILE).exists()


def test_live_lock_is_refused_naming_the_pid(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(tmp_path / "run", other.pid)
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(UserError, match=f"pid {other.pid}") as info:
                prepare_run_dir(tmp_path / "run", **kwargs)
            assert str((tmp_path / "run").absolute()) in str(info.value)
            assert "in use by another netsize process" in str(info.value)
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_dead_lock_is_taken_over(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write_lock(tmp_path / "run", gone.pid)
    lock = prepare_run_dir(tmp_path / "run")
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(f"{LOCK_FILE}.")]
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path: Path) -> None:
    first = prepare_run_dir(tmp_path / "run")
    second = prepare_run_dir(tmp_path / "run", resume=True)  # same pid: taken over
    first.release()
    assert (tmp_path / "run" / LOCK_FILE).exists()
    second.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_run_folder_refused_without_overwrite_and_emptied_with_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _run_folder(out)
    with pytest.raises(UserError, match="already holds a netsize run") as info:
        prepare_run_dir(out)
    assert str(out.absolute()) in str(info.value) and "--overwrite" in str(info.value)
    assert (out / "history.csv").exists() and not (out / LOCK_FILE).exists()
    with prepare_run_dir(out, overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, MARKER_FILE])


def test_marker_alone_marks_a_run(tmp_path: Path) -> None:
    prepare_run_dir(tmp_path / "run").release()
    with pytest.raises(UserError, match="already holds a netsize run"):
        prepare_run_dir(tmp_path / "run")


def test_resume_keeps_contents(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _run_folder(out)
    with prepare_run_dir(out, resume=True):
        assert (out / "history.csv").read_text() == "step\n"
        assert (out / "checkpoints" / "best" / "spec.json").exists()
        assert (out / MARKER_FILE).exists()


def test_overwrite_and_resume_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="only one"):
        prepare_run_dir(tmp_path / "run", overwrite=True, resume=True)


@pytest.mark.parametrize("kwargs", [{}, {"overwrite": True}, {"resume": True}])
def test_user_folder_is_refused_and_untouched(tmp_path: Path, kwargs: dict) -> None:
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "thesis.tex").write_text("precious")
    (out / ".thesis.tex.abcd1234").write_text("looks temporary")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(UserError, match="holds no netsize run") as info:
        prepare_run_dir(out, **kwargs)
    assert str(out.absolute()) in str(info.value)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / "thesis.tex").read_text() == "precious"


def test_out_that_is_a_file_or_under_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "results.txt"
    afile.write_text("x")
    with pytest.raises(UserError, match="is a file") as info:
        prepare_run_dir(afile, overwrite=True)
    assert str(afile.absolute()) in str(info.value) and "choose another --out" in str(info.value)
    with pytest.raises(UserError, match="lies under the file") as info:
        prepare_run_dir(afile / "deeper" / "run")
    assert str((afile / "deeper" / "run").absolute()) in str(info.value)
    assert afile.read_text() == "x"


def test_relative_path_is_reported_absolute(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "f").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        prepare_run_dir(Path("f"))
    assert str(tmp_path / "f") in str(info.value)


def test_unwritable_parent_is_refused(tmp_path: Path, monkeypatch) -> None:
    def denied(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(UserError, match="cannot create or write") as info:
        prepare_run_dir(tmp_path / "ro" / "run")
    assert str((tmp_path / "ro" / "run").absolute()) in str(info.value)


def test_unwritable_existing_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    real_open = os.open

    def denied(path: object, flags: int, *args: object) -> int:
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UserError, match="cannot create or write") as info:
        prepare_run_dir(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_name_too_long_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        prepare_run_dir(tmp_path / ("n" * 300))
    assert str(tmp_path) in str(info.value)


def test_stale_temporaries_are_cleaned_but_not_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    (ckpt / "best").mkdir(parents=True)
    leftover_dir = Path(tempfile.mkdtemp(dir=ckpt, prefix=".best."))
    (leftover_dir / "weights.safetensors").write_text("half")
    fd, leftover_file = tempfile.mkstemp(dir=out, prefix=".history.csv.")
    os.close(fd)
    keep = [out / ".hidden", out / ".config.yaml", ckpt / "best", out / "notes.tmp"]
    (out / ".hidden").write_text("")
    (out / ".config.yaml").write_text("")
    (out / "notes.tmp").write_text("")
    _write_lock(out, os.getpid())
    assert clean_stale_temporaries(out) == 2
    assert not leftover_dir.exists() and not Path(leftover_file).exists()
    assert all(p.exists() for p in keep) and (out / LOCK_FILE).exists()


def test_resume_and_overwrite_clean_stale_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    _run_folder(out)
    stale = Path(tempfile.mkdtemp(dir=out / "checkpoints", prefix=".best."))
    with prepare_run_dir(out, resume=True):
        assert not stale.exists()
        assert (out / "checkpoints" / "best").exists()
