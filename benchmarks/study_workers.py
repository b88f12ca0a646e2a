"""Study workers: wall time of one `--trials N` study run by one worker process vs two.

Starts a throwaway PostgreSQL server on 127.0.0.1 (initdb + pg_ctl from PG_BIN or
/usr/lib/postgresql/*/bin; as root it runs them as the `postgres` user), then for each worker
count W runs W processes of

    python -m netsize grow RECIPE --trials N --storage URL --study bench-wW --out DIR/wW/I
           --threads 1 --device cpu --set train.epochs=20

at once on a fresh study (a different study name per W, same storage), and times from the first
start to the last exit. Wall time includes each process's start-up (imports, ~5 s here) and the
study outputs every worker writes at the end, as a real multi-worker study would. It prints a
table: workers, wall time, trials completed (surplus/failed trials beside), the summed duration
of the completed trials, and the speed-up over one worker. Default: recipes/tiny/search_iris.yaml
with train.epochs=20 (about 2-4 s a trial on the 2-core dev machine).

Unlike the other benchmarks this one drives the CLI (several processes are the point) and writes
run folders into a temporary directory, removed at the end unless --keep.

    /work/venv/bin/python benchmarks/study_workers.py                         # 8 trials, ~1 min
    /work/venv/bin/python benchmarks/study_workers.py --trials 12 --json workers.json
    /work/venv/bin/python benchmarks/study_workers.py --workers 1 2 4 --set train.epochs=40
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "recipes" / "tiny" / "search_iris.yaml"


def pg_bin() -> Path | None:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server(bin_dir: Path, database: str) -> Iterator[str]:
    """A PostgreSQL server in a temporary folder on a free 127.0.0.1 port; yields a URL."""
    import psycopg2

    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []  # initdb refuses root
    base = Path(tempfile.mkdtemp(prefix="netsize-pg-"))
    if as_root:
        shutil.chown(base, user="postgres")
    data, log, port = base / "data", base / "server.log", free_port()
    started = False
    try:
        subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        options = (f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=50")
        started = True
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                        "-l", str(log), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def storage_url(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3; name psycopg2 when psycopg is absent."""
    from sqlalchemy.engine import make_url

    driver = make_url(url).get_dialect().driver
    if importlib.util.find_spec(driver) is None and importlib.util.find_spec("psycopg2"):
        return url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return url


def run_study(url: str, workers: int, args: argparse.Namespace, folder: Path,
              err: Console) -> dict[str, Any]:
    name = f"bench-w{workers}"
    overrides = [item for value in args.overrides for item in ("--set", value)]
    procs, logs = [], []
    started = time.perf_counter()
    for index in range(workers):
        out = folder / f"w{workers}" / str(index)
        out.parent.mkdir(parents=True, exist_ok=True)
        log = out.parent / f"{index}.log"
        logs.append(log)
        with log.open("wb") as handle:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "netsize", "grow", str(args.recipe), "--trials",
                 str(args.trials), "--storage", url, "--study", name, "--out", str(out),
                 "--threads", "1", "--device", "cpu", *overrides],
                cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT))
    try:
        codes = [proc.wait(timeout=args.timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - started
    for code, log in zip(codes, logs, strict=True):
        if code != 0:
            err.print(f"[red]worker exited {code}[/]: {log}\n"
                      f"{log.read_text(errors='replace')[-2000:]}", highlight=False)
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    trial_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds()
                        for t in complete if t.datetime_complete and t.datetime_start)
    return {"workers": workers, "study": name, "wall_seconds": wall, "exit_codes": codes,
            "complete": len(complete),
            "surplus": sum(1 for t in trials if t.user_attrs.get("surplus")),
            "failed": sum(1 for t in trials if t.state == TrialState.FAIL),
            "trial_seconds": trial_seconds,
            "mean_trial_seconds": trial_seconds / len(complete) if complete else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="completed trials per study")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to time (default: 1 2); speed-up is over the first")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--set", dest="overrides", action="append", default=None,
                        metavar="KEY=VALUE", help="recipe override, repeatable "
                        "(default: train.epochs=20)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per study")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.overrides is None:
        args.overrides = ["train.epochs=20"]

    out = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)
    bin_dir = pg_bin()
    if bin_dir is None:
        err.print("PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN.")
        return 2
    folder = Path(tempfile.mkdtemp(prefix="netsize-workers-"))
    results = []
    try:
        with postgres_server(bin_dir, "netsize_bench") as plain:
            url = storage_url(plain)
            err.print(f"PostgreSQL {bin_dir} -> {url}; runs in {folder}", highlight=False)
            for workers in args.workers:
                err.print(f"{workers} worker(s), {args.trials} trials ...", highlight=False)
                results.append(run_study(url, workers, args, folder, err))
                err.print(f"  {results[-1]['wall_seconds']:.1f}s", highlight=False)
    finally:
        if args.keep:
            err.print(f"run folders kept in {folder}", highlight=False)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    base = results[0]["wall_seconds"]
    table = Table(title=f"Study workers: {args.recipe.name} {' '.join(args.overrides)}, "
                        f"--trials {args.trials}, --threads 1 each, {os.cpu_count()} CPUs",
                  caption="wall: first worker start to last exit, start-up included")
    for header in ("workers", "wall time", "trials completed", "surplus / failed",
                   "trial time (sum)", "mean trial", "speed-up"):
        table.add_column(header, justify="right")
    for r in results:
        r["speedup"] = base / r["wall_seconds"]
        table.add_row(str(r["workers"]), f"{r['wall_seconds']:.1f}s",
                      f"{r['complete']}/{args.trials}", f"{r['surplus']} / {r['failed']}",
                      f"{r['trial_seconds']:.1f}s", f"{r['mean_trial_seconds']:.2f}s",
                      f"{r['speedup']:.2f}x")
    out.print(table)
    if args.json:
        payload = {"benchmark": "study_workers", "recipe": str(args.recipe),
                   "overrides": args.overrides, "trials": args.trials,
                   "cpus": os.cpu_count(), "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    ok = all(r["complete"] == args.trials and not any(r["exit_codes"]) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
