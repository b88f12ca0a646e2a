"""--tensorboard: one scalar per epoch and per growth event at the optimizer step, equal to the
run's own metrics, and a resumed run's curves hold every step once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsize.cli import app
from netsize.tensorboard import EPOCH_SCALARS, Fanout, TensorBoardLog

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"
runner = CliRunner()


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_equal_the_runs_metrics_and_events(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["grow", str(TINY / "mlp_iris.yaml"), "--set", "grow.tau=1.0",
                                 "--out", str(out), "--tensorboard"])
    assert result.exit_code == 0, result.output
    scalars = _scalars(out / "tensorboard")
    metrics = json.loads((out / "metrics.json").read_text())
    events = json.loads((out / "events.json").read_text())
    assert events, "the recipe grows with tau 1"
    for tag, key in EPOCH_SCALARS.items():
        assert [s for s, _ in scalars[tag]] == [r["step"] for r in metrics]
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in metrics],
                                                             rel=1e-6)
    assert [s for s, _ in scalars["growth/params_after"]] == [e["step"] for e in events]
    assert [v for _, v in scalars["growth/params_after"]] == [e["params_after"] for e in events]


def test_a_resumed_log_purges_what_the_killed_run_wrote_after_its_saved_step(tmp_path):
    def epoch(step: int) -> dict:
        return {"step": step, **{key: float(step) for key in EPOCH_SCALARS.values()}}

    first = TensorBoardLog(tmp_path)
    for step in (1, 10, 20, 25):  # epoch ends at 10 and 20; killed after logging step 25
        first.step(step, 0)
        if step % 10 == 0 or step == 25:
            first.epoch(epoch(step))
    first.writer.close()
    resumed = Fanout(TensorBoardLog(tmp_path))
    resumed.step(20, 2)  # resumes from the state saved at step 20
    resumed.epoch(epoch(30))
    steps = [s for s, _ in _scalars(tmp_path)["val/metric"]]
    assert steps == [10, 20, 30]
