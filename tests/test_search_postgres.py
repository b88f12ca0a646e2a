"""Several workers on one PostgreSQL study: a real server on 127.0.0.1, started per module.

Two workers share `--trials 6` exactly (no trial lost or run twice), a worker killed with
SIGKILL has its running trial failed by the heartbeat and retried by the next worker, and a worker
that opens a fresh database while another creates the tables gets going.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from optuna.storages import RetryFailedTrialCallback
from optuna.storages._rdb import models as optuna_models
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from netsize.cli import app

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "tiny" / "search_iris.yaml"
WORKER_TIMEOUT = 180

def _worker_url(url: str) -> str:
    """Workers get the plain postgresql:// URL of the README (netsize picks the driver)."""
    return url


def _direct(url: str) -> str:
    """The test's own optuna/SQLAlchemy calls name the installed driver (psycopg2)."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def _pg_bin() -> Path | None:
    """PG_BIN, else the newest /usr/lib/postgresql/*/bin, else the folder of pg_ctl on PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                         else 0, reverse=True)
    on_path = shutil.which("pg_ctl")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server with one database; yields its URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    psycopg2 = pytest.importorskip("psycopg2")
    # initdb refuses root: run the server as the postgres user then, in a folder it owns.
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="netsize-pg-"))
    if as_root:
        shutil.chown(base, user="postgres")
    data, log = base / "data", base / "server.log"
    port = _free_port()
    started = False
    try:
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        options = (f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=50")
        done = subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                               "-l", str(log), "-w", "-t", "60", "start"],
                              capture_output=True, text=True, timeout=90)
        started = True
        assert done.returncode == 0, done.stdout + done.stderr + (
            log.read_text() if log.exists() else "")
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE netsize_test")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/netsize_test"
    finally:
        if started:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _worker(url: str, study: str, out: Path, trials: int, *extra: str,
            new_session: bool = False) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "wb")  # the child keeps its own handle
    cmd = [sys.executable, "-m", "netsize", "grow", str(RECIPE), "--trials", str(trials),
           "--storage", url, "--study", study, "--out", str(out), "--device", "cpu",
           "--threads", "1", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=new_session)
    log.close()
    return proc


def _output(out: Path) -> str:
    path = out.parent / f"{out.name}.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _run_folders(*outs: Path) -> list[int]:
    return [int(p.name) for out in outs if (out / "trials").is_dir()
            for p in (out / "trials").iterdir()]


def test_plain_postgresql_url_opens(pg_url, tmp_path):
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["grow", str(RECIPE), "--trials", "1", "--storage",
                                          pg_url, "--study", "plain", "--out",
                                          str(tmp_path / "out"), "--device", "cpu",
                                          "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="plain", storage=_direct(pg_url))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1


def test_two_workers_share_the_trials_exactly(pg_url, tmp_path):
    pg_url = _worker_url(pg_url)
    # The tables exist before the workers start: creating them at once is a race of its own
    # (test_worker_survives_a_concurrent_schema_creation), kept out of this test.
    optuna.storages.RDBStorage(_direct(pg_url))
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    workers = [_worker(pg_url, "twoworkers", out_a, 6), _worker(pg_url, "twoworkers", out_b, 6)]
    try:
        for proc, out in zip(workers, (out_a, out_b), strict=True):
            assert proc.wait(timeout=WORKER_TIMEOUT) == 0, _output(out)
    finally:
        for proc in workers:
            _stop(proc)
    trials = optuna.load_study(study_name="twoworkers", storage=_direct(pg_url)).get_trials()
    complete = [t.number for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and len(set(complete)) == 6
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    for t in others:  # a worker that found 6 complete or running ahead of its trial
        assert t.state == TrialState.PRUNED and t.user_attrs.get("surplus") is True, t
    folders = _run_folders(out_a, out_b)
    assert len(folders) == len(set(folders)), f"a trial ran in both workers: {sorted(folders)}"
    assert sorted(folders) == sorted(complete), "every complete trial has exactly one run folder"
    assert _run_folders(out_a) and _run_folders(out_b), "both workers ran trials"
    for out in (out_a, out_b):  # each worker writes the whole study's outputs at the end
        points = (out / "points.csv").read_text().splitlines()[1:]
        assert {int(line.split(",")[0]) for line in points} == set(complete)


def _wait_for_running_trial(url: str, study: str, out: Path, proc: subprocess.Popen,
                            timeout: float = 120) -> optuna.trial.FrozenTrial:
    """A RUNNING trial whose run folder exists (so its heartbeat thread has started)."""
    storage = optuna.storages.RDBStorage(_direct(url))  # one connection pool for all the polls
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker A ended early:\n{_output(out)}"
        try:
            running = optuna.load_study(study_name=study, storage=storage).get_trials(
                states=(TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            running = []
        if running and (out / "trials" / f"{running[0].number:04d}").is_dir():
            return running[0]
        time.sleep(0.3)
    raise AssertionError(f"no running trial within {timeout} s:\n{_output(out)}")


def test_killed_worker_trial_is_failed_and_retried(pg_url, tmp_path):
    pg_url = _worker_url(pg_url)
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    optuna.storages.RDBStorage(_direct(pg_url))  # the schema exists before A starts polling
    # A's trials take minutes (400 epochs); it is killed in the middle of its first one.
    worker_a = _worker(pg_url, "killed", out_a, 3, "--set", "train.epochs=400",
                       new_session=True)
    try:
        killed = _wait_for_running_trial(pg_url, "killed", out_a, worker_a)
        time.sleep(1.5)  # let a heartbeat or two land (interval 1 s)
        assert worker_a.poll() is None, "A's trial ended before it could be killed"
        os.killpg(worker_a.pid, signal.SIGKILL)
        worker_a.wait(timeout=30)
    finally:
        if worker_a.poll() is None:
            os.killpg(worker_a.pid, signal.SIGKILL)
            worker_a.wait(timeout=30)
    assert worker_a.returncode == -signal.SIGKILL

    worker_b = _worker(pg_url, "killed", out_b, 3)
    try:
        assert worker_b.wait(timeout=WORKER_TIMEOUT) == 0, _output(out_b)
    finally:
        _stop(worker_b)

    trials = optuna.load_study(study_name="killed", storage=_direct(pg_url)).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in trials
               if RetryFailedTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in trials]
    retry = retries[0]
    assert retry.system_attrs["failed_trial"] == killed.number
    assert retry.state == TrialState.COMPLETE
    assert retry.params == killed.params  # the same point of the space, run again
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert (out_b / "trials" / f"{retry.number:04d}" / "summary.json").is_file()


def _new_database(url: str, name: str) -> str:
    import psycopg2

    parts = make_url(url)
    conn = psycopg2.connect(host=parts.host, port=parts.port, user=parts.username,
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    conn.close()
    return parts.set(database=name).render_as_string(hide_password=False)


def _lock_waiters(url: str, database: str) -> int:
    import psycopg2

    parts = make_url(url)
    conn = psycopg2.connect(host=parts.host, port=parts.port, user=parts.username,
                            dbname="postgres")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                           "wait_event_type = 'Lock'", (database,))
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def test_worker_survives_a_concurrent_schema_creation(pg_url, tmp_path):
    """Made deterministic: this test creates optuna's tables in a transaction it holds open,
    as a worker that started a moment earlier would, and commits once the worker waits on it."""
    url = _worker_url(_new_database(pg_url, "schemarace"))
    out = tmp_path / "w"
    engine = sqlalchemy.create_engine(_direct(url))
    worker = None
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            optuna_models.BaseModel.metadata.create_all(conn)  # not committed yet
            worker = _worker(url, "schemarace", out, 1)
            deadline = time.monotonic() + 90
            while _lock_waiters(url, "schemarace") == 0:
                assert worker.poll() is None, f"worker ended first:\n{_output(out)}"
                assert time.monotonic() < deadline, f"worker never waited:\n{_output(out)}"
                time.sleep(0.2)
            transaction.commit()
        assert worker.wait(timeout=WORKER_TIMEOUT) == 0, _output(out)
    finally:
        engine.dispose()
        if worker is not None:
            _stop(worker)
    study = optuna.load_study(study_name="schemarace", storage=_direct(url))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
