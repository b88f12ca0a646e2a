"""netsize compare: hypervolume and fronts by hand, gates and their exit codes, saved runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netsize.cli import app
from netsize.compare import (
    anytime_metric,
    check_requirement,
    check_target,
    hypervolume,
    join_curves,
    mark_front,
    params_to_reach,
    summarise,
    sweep_coverage,
)
from netsize.errors import UserError
from netsize.report import pareto_front

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"
runner = CliRunner()


def _pts(*pairs, method="m", seed=0):
    return [{"params": p, "val_metric": v, "method": method, "seed": seed} for p, v in pairs]


def test_hypervolume_of_a_single_point():
    # log10 box from 10 to 1000 (2 decades) x height 0.5 above the reference metric 0
    assert hypervolume(_pts((10, 0.5)), (1000, 0.0)) == pytest.approx(2 * 0.5)


def test_hypervolume_staircase_by_hand():
    rows = _pts((10, 0.5), (100, 0.8), (1000, 0.9))
    # [1,2) x 0.5 + [2,3) x 0.8 + [3, log10 2000) x 0.9
    expected = 0.5 + 0.8 + (math.log10(2000) - 3) * 0.9
    assert hypervolume(rows, (2000, 0.0)) == pytest.approx(expected)


def test_hypervolume_ignores_dominated_ties_and_duplicates():
    base = _pts((10, 0.5), (100, 0.8))
    noisy = base + _pts((10, 0.5), (100, 0.8), (100, 0.7), (50, 0.4), (10, 0.3))
    assert hypervolume(noisy, (1000, 0.0)) == pytest.approx(hypervolume(base, (1000, 0.0)))


def test_points_outside_the_reference_box_add_nothing():
    assert hypervolume(_pts((5000, 0.9)), (1000, 0.0)) == 0.0
    assert hypervolume(_pts((10, -0.1)), (1000, 0.0)) == 0.0


def test_front_membership_per_method_and_overall():
    rows = _pts((10, 0.5), (100, 0.6), method="a") + _pts((10, 0.7), (200, 0.9), method="b")
    marked = {(r["method"], r["params"]): r for r in mark_front(rows)}
    assert marked[("a", 100)]["on_method_front"] and not marked[("a", 100)]["on_front"]
    assert marked[("b", 10)]["on_front"] and marked[("b", 200)]["on_front"]
    assert [r["params"] for r in pareto_front(rows)] == [10, 200]


def test_params_to_reach_targets():
    rows = _pts((10, 0.5), (100, 0.75), (1000, 0.85), (50, 0.81))
    assert params_to_reach(rows, 0.7) == 50
    assert params_to_reach(rows, 0.8) == 50
    assert params_to_reach(rows, 0.99) is None


def test_requirements_and_targets():
    rows = _pts((10, 0.5), (100, 0.9), method="grow") + _pts((100, 0.5), method="fixed")
    summaries, _ = summarise(rows, {}, [0.8])
    assert check_requirement("grow >= fixed", summaries)[0]
    assert not check_requirement("grow < fixed", summaries)[0]
    with pytest.raises(UserError, match="no method 'prune'"):
        check_requirement("prune >= fixed", summaries)
    with pytest.raises(UserError, match="METHOD >= METHOD"):
        check_requirement("grow is better", summaries)
    assert check_target(rows, 0.85, 200)[0]
    assert not check_target(rows, 0.95, None)[0]
    assert not check_target(rows, 0.85, 50)[0]


def test_spread_over_seeds():
    rows = _pts((10, 0.5), method="m", seed=0) + _pts((10, 0.7), method="m", seed=1)
    (summary,), ref = summarise(rows, {}, [])
    volumes = [hypervolume([r for r in rows if r["seed"] == s], ref) for s in (0, 1)]
    assert summary.hypervolume == pytest.approx(sum(volumes) / 2)
    assert summary.hypervolume_std == pytest.approx(abs(volumes[0] - volumes[1]) / 2)


def test_anytime_metric_by_hand():
    # 10 FLOPs at 0.5, then 30 at max(0.5, 0.4) (a dip keeps the best so far), then 60 at 0.9
    assert anytime_metric([(10, 0.5), (40, 0.4), (100, 0.9)]) == pytest.approx(
        (10 * 0.5 + 30 * 0.5 + 60 * 0.9) / 100)
    assert anytime_metric([(5, 0.7)]) == pytest.approx(0.7)
    assert math.isnan(anytime_metric([]))
    # a sweep: the second run's FLOPs start where the first ended
    assert join_curves([[(10, 0.5), (20, 0.6)], [(5, 0.3), (30, 0.8)]]) == [
        (10, 0.5), (20, 0.6), (25, 0.3), (50, 0.8)]
    # the same accuracy reached with less compute, then kept, ranks higher
    assert anytime_metric([(10, 0.9), (100, 0.9)]) > anytime_metric([(90, 0.5), (100, 0.9)])


def test_anytime_in_summaries_is_the_mean_over_seeds():
    rows = _pts((10, 0.5), seed=0) + _pts((10, 0.7), seed=1)
    curves = {("m", 0): [(10, 0.2), (20, 0.5)], ("m", 1): [(10, 0.7)]}
    (summary,), _ = summarise(rows, {}, [], curves)
    assert summary.anytime == pytest.approx((0.35 + 0.7) / 2)
    assert summary.anytime_std == pytest.approx(0.175)
    (no_curve,), _ = summarise(rows, {}, [])
    assert math.isnan(no_curve.anytime)


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    grown, fixed = root / "grown", root / "fixed"
    assert runner.invoke(app, ["grow", str(TINY / "mlp_iris.yaml"), "--out", str(grown)]
                         ).exit_code == 0
    assert runner.invoke(app, ["train", str(TINY / "mlp_iris.yaml"), "--out", str(fixed)]
                         ).exit_code == 0
    return [grown, fixed]


def test_comparing_saved_runs_trains_nothing(saved_runs, tmp_path, monkeypatch):
    from netsize import train

    def refuse(*_, **__):
        raise AssertionError("compare of saved runs must not train")

    monkeypatch.setattr(train.Trainer, "fit", refuse)
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", *map(str, saved_runs), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert {m["method"] for m in summary["methods"]} == {"grow-senn", "fixed"}
    for name in ("points.csv", "points.json", "front.png", "report.md", "methods.csv"):
        assert (out / name).is_file()
    points = json.loads((out / "points.json").read_text())
    assert any(p["on_front"] for p in points)
    # the plot's y axis is named after the runs' metric, read from their fronts
    assert json.loads((out / "front.json").read_text())["metric"] == "accuracy"
    # the anytime metric from each run's metrics (train_flops so far, val_metric per epoch)
    for method, folder in zip(("grow-senn", "fixed"), saved_runs, strict=True):
        metrics = json.loads((folder / "metrics.json").read_text())
        expected = anytime_metric([(m["train_flops"], m["val_metric"]) for m in metrics])
        mine = next(m for m in summary["methods"] if m["method"] == method)
        assert mine["anytime"] == pytest.approx(expected)
        assert 0.0 < mine["anytime"] <= max(m["val_metric"] for m in metrics)
    assert "anytime" in (out / "methods.csv").read_text().splitlines()[0]
    assert "Anytime" in (out / "report.md").read_text()


@pytest.mark.parametrize(("gate", "code"), [
    (["--min-metric", "0.0"], 0),
    (["--min-metric", "1.01"], 1),
    (["--require", "grow-senn >= grow-senn"], 0),
    (["--require", "grow-senn > grow-senn"], 1),
    (["--require", "fixed >= prune"], 2),
])
def test_gate_exit_codes(saved_runs, tmp_path, gate, code):
    result = runner.invoke(app, ["compare", *map(str, saved_runs), "--out", str(tmp_path / "c"),
                                 *gate])
    assert result.exit_code == code, result.output
    if code == 1:
        assert "gate failed" in result.output
    if code == 0:  # one line saying the gate holds, for a CI log
        passed = [line for line in result.output.splitlines() if line.startswith("gates passed:")]
        assert len(passed) == 1 and "gate failed" not in result.output


def _compare_with_a_run_setting(saved_runs, tmp_path, override: str):
    """compare the grown run with a train run of the same recipe but for `override`."""
    other = tmp_path / "other"
    assert runner.invoke(app, ["train", str(TINY / "mlp_iris.yaml"), "--out", str(other),
                               "--set", override]).exit_code == 0
    return runner.invoke(app, ["compare", str(saved_runs[0]), str(other),
                               "--out", str(tmp_path / "c")])


def test_runs_trained_differently_are_compared_with_a_warning(saved_runs, tmp_path):
    result = _compare_with_a_run_setting(saved_runs, tmp_path, "train.lr=0.05")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "train.lr" in warning[0]
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["warnings"] and "train.lr" in summary["warnings"][0]
    plain = runner.invoke(app, ["compare", *map(str, saved_runs), "--out", str(tmp_path / "d")])
    assert "warning:" not in plain.output  # grow and train of one recipe: nothing to warn about


def test_runs_of_different_data_are_refused(saved_runs, tmp_path):
    result = _compare_with_a_run_setting(saved_runs, tmp_path, "data.name=wine")
    assert result.exit_code == 2 and "different data (data.name" in result.output
    assert not (tmp_path / "c").exists()  # refused before the output folder is made


def test_bad_folders_and_methods_exit_2(tmp_path):
    result = runner.invoke(app, ["compare", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run folder" in result.output
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2 and "not a netsize run folder" in result.output
    result = runner.invoke(app, ["compare", str(TINY / "mlp_iris.yaml"), "--methods", "magic"])
    assert result.exit_code == 2 and "magic" in result.output


def test_compare_a_recipe_runs_every_method(tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(TINY / "prune_mlp.yaml"), "--out", str(out),
                                 "--seeds", "2", "--methods", "fixed,grow-senn,grow-gradmax,prune"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert set(methods) == {"fixed", "grow-senn", "grow-gradmax", "prune"}
    assert all(m["train_flops"] > 0 for m in methods.values())
    assert all(0.0 < m["anytime"] <= 1.0 for m in methods.values())  # every method has a curve
    points = json.loads((out / "points.json").read_text())
    assert {p["seed"] for p in points} == {0, 1}


def test_sweep_coverage_of_the_grown_sizes():
    grown = _pts((100, 0.5), (400, 0.8), method="grow-senn")
    wide = _pts((100, 0.5), (200, 0.6), (300, 0.7), (500, 0.9), method="fixed")
    (line,) = sweep_coverage(grown + wide)
    assert "100-500" in line and "from 100 to 400: covered" in line
    short = _pts((100, 0.5), (200, 0.6), (300, 0.7), (400, 0.9), method="fixed")
    assert "not covered" in sweep_coverage(grown + short)[0]  # not beyond the final size
    few = _pts((100, 0.5), (500, 0.9), method="fixed")
    assert "not covered" in sweep_coverage(grown + few)[0]  # fewer than 4 sizes
    assert sweep_coverage(grown) == []


def test_wall_time_only_where_the_runs_were_timed_alike(saved_runs, tmp_path):
    import math
    import shutil

    from netsize.runs.compare import compare_runs
    from netsize.runs.compare_report import summary_rows

    same = compare_runs(saved_runs, tmp_path / "same")
    assert all(math.isfinite(s.wall_seconds) for s in same.summaries)
    other = tmp_path / "other"
    shutil.copytree(saved_runs[1], other)
    summary = json.loads((other / "summary.json").read_text())
    summary["timing"]["threads"] += 7  # as if timed with other threads (or elsewhere)
    (other / "summary.json").write_text(json.dumps(summary))
    mixed = compare_runs([saved_runs[0], other], tmp_path / "mixed")
    assert all(math.isnan(s.wall_seconds) for s in mixed.summaries)
    assert {row["wall_s"] for row in summary_rows(mixed.summaries)} == {"-"}


def test_a_hypervolume_just_short_of_the_sweeps_does_not_read_100_percent():
    """The claim line's share has one decimal: 1.4015 against 1.4044 is 99.8%, not 100%."""
    from netsize.compare import MethodSummary
    from netsize.runs.compare_report import claims

    def summary(method: str, hv: float, flops: float) -> MethodSummary:
        return MethodSummary(method, 3, hv, 0.0, 0.9, 100, {}, flops, 1.0)

    line, = claims([summary("fixed", 1.4044, 4.45e12), summary("grow-senn", 1.4015, 1.99e12)])
    assert "(99.8%)" in line and "using 44.7% of its training FLOPs" in line
