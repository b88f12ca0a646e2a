"""optuna-dashboard reads a netsize study: its JSON API lists the study, trials and metric names."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from netsize.cli import app

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "tiny" / "search_iris.yaml"
STUDY = "grow-search_iris"


def _dashboard_command() -> list[str]:
    beside = Path(sys.executable).parent / "optuna-dashboard"
    found = str(beside) if beside.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        pytest.importorskip("optuna_dashboard")
        return [sys.executable, "-c", "from optuna_dashboard._cli import main; main()"]
    return [found]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def _wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise AssertionError(f"optuna-dashboard exited {server.returncode}:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        try:
            return _get(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise AssertionError(f"optuna-dashboard did not answer within {timeout} s:\n"
                                     f"{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.3)


def test_dashboard_serves_the_study(tmp_path):
    command = _dashboard_command()
    out = tmp_path / "study"
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["grow", str(RECIPE), "--trials", "2", "--out", str(out),
                                          "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output

    port, log = _free_port(), tmp_path / "dashboard.log"
    with log.open("wb") as handle:
        server = subprocess.Popen([*command, f"sqlite:///{out / 'study.db'}", "--host",
                                   "127.0.0.1", "--port", str(port)],
                                  stdout=handle, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        listing = _wait_for(f"{base}/api/studies", server, log)
        studies = {s["study_name"]: s for s in listing["study_summaries"]}
        assert list(studies) == [STUDY]
        summary = studies[STUDY]
        assert summary["directions"] == ["maximize", "minimize"]
        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        assert detail["name"] == STUDY
        assert detail["objective_names"] == ["val_metric", "params"]
        trials = detail["trials"]
        assert [t["state"] for t in trials] == ["Complete", "Complete"]
        for trial in trials:
            assert len(trial["values"]) == 2
            assert {p["name"] for p in trial["params"]} == {"grow.tau", "train.lr"}
            assert "points" in {a["key"] for a in trial["user_attrs"]}
        attrs = {a["key"]: json.loads(a["value"]) for a in summary["user_attrs"]}
        assert attrs["sampler"] == {"name": "random", "seed": 0}
        assert detail["best_trials"]  # the dashboard's own Pareto front of the two trials
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
