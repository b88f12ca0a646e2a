from __future__ import annotations

from netsize.report import markdown_table, pareto_front


def _rows(*pairs):
    return [{"params": p, "val_metric": m, "tag": f"r{i}"} for i, (p, m) in enumerate(pairs)]


def test_front_of_hand_made_points():
    rows = _rows((100, 0.5), (200, 0.7), (150, 0.4), (300, 0.7), (400, 0.9), (50, 0.1))
    front = pareto_front(rows)
    assert [(r["params"], r["val_metric"]) for r in front] == [(50, 0.1), (100, 0.5),
                                                               (200, 0.7), (400, 0.9)]


def test_single_point_and_ties():
    assert [r["tag"] for r in pareto_front(_rows((10, 0.3)))] == ["r0"]
    # Same size: only the better metric survives. Same point twice: kept once.
    rows = _rows((10, 0.3), (10, 0.6), (20, 0.6), (10, 0.6))
    assert [(r["params"], r["val_metric"]) for r in pareto_front(rows)] == [(10, 0.6)]


def test_markdown_table():
    text = markdown_table([{"a": 1, "b": 0.123456}], [("a", "A"), ("b", "B")])
    assert text.splitlines() == ["| A | B |", "| --- | --- |", "| 1 | 0.1235 |"]
