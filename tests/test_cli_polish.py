"""What a user sees of a run: the progress bar's epoch count, tables at 80 columns."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from netsize.cli import app
from netsize.cli.progress import TrainingBar, bar
from netsize.cli.tables import compare_tables, front_table, prune_table
from netsize.compare import MethodSummary

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _record(epoch: int) -> dict:
    return {"epoch": epoch, "val_metric": 0.5, "params": 1234}


def test_training_bar_names_the_epoch_in_progress_out_of_the_runs_epochs():
    progress = bar(Console(file=io.StringIO(), width=120))
    training = TrainingBar(progress, epochs=3)
    training.start(total_steps=6)
    infos = []
    for epoch in (1, 2, 3):
        for step in (2 * epoch - 1, 2 * epoch):
            training.step(step, epoch)
            infos.append(progress.tasks[0].fields["info"])
        training.epoch(_record(epoch))
    assert infos[0] == "epoch 1/3"  # nothing finished yet: no metric to show
    assert infos[2].startswith("epoch 2/3 val 0.5000 1,234 params")
    assert progress.tasks[0].fields["info"].startswith("epoch 3/3")
    assert progress.tasks[0].completed == 6


def test_cli_bar_ends_at_the_runs_last_epoch(tmp_path: Path):
    result = runner.invoke(app, ["train", str(ROOT / "recipes" / "tiny" / "cnn_digits.yaml"),
                                 "--out", str(tmp_path / "run"), "--set", "train.epochs=3"],
                           env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "epoch 3/3" in result.output and "epoch 4" not in result.output


def _rendered(table) -> list[str]:
    console = Console(file=io.StringIO(), width=80)
    console.print(table)
    return console.file.getvalue().splitlines()


def _fits_80_columns(lines: list[str]) -> None:
    assert all(len(line) <= 80 for line in lines)
    assert not any("…" in line for line in lines), "\n".join(lines)


def test_prune_table_of_a_large_model_fits_80_columns():
    row = {"epsilon": 1.05, "params": 25_557_032, "flops": 8.2e9, "latency_b1_ms": 123.456,
           "latency_b64_ms": 4567.891, "val_metric": 0.99, "test_metric": 0.98}
    rows = [dict(row, variant=v) for v in ("original", "pruned+transfer", "from-scratch")]
    lines = _rendered(prune_table(rows, Path("/tmp/run")))
    _fits_80_columns(lines)
    assert any("25,557,032" in line and "8.2e9" in line for line in lines)


def test_compare_tables_of_large_models_fit_80_columns():
    summary = MethodSummary("grow-gradmax", 120, 12.3456, 0.1234, 0.9912, 25_557_032,
                            {"0.7": 1_234_567, "0.8": None, "0.9": 23_456_789},
                            3.3e16, 12345.6)
    summary.anytime = 0.9876
    tables = compare_tables([summary, summary], Path("/tmp/cmp"))
    assert len(tables) == 2  # compute and the reach columns get their own table
    for table in tables:
        _fits_80_columns(_rendered(table))
    assert any("23,456,789" in line for line in _rendered(tables[1]))


def test_front_table_of_a_study_fits_80_columns():
    point = {"trial": 123, "tag": "event-012", "step": 123_456, "params": 25_557_032,
             "val_metric": 0.9912, "test_metric": 0.9876}
    _fits_80_columns(_rendered(front_table([point] * 3, "caption", "title")))


def test_a_finishing_run_gets_its_own_bar_and_epoch_count():
    progress = bar(Console(file=io.StringIO(), width=120))
    training = TrainingBar(progress, epochs=30)
    training.start(total_steps=600)  # 20 steps an epoch
    training.step(600, 30)
    training.epoch(_record(30))
    training.start(total_steps=100)  # grow.finish_epochs 5 on the same data
    training.step(100, 5)
    assert [t.description for t in progress.tasks] == ["training", "finishing"]
    assert progress.tasks[1].fields["info"] == "epoch 5/5"
