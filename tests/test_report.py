from __future__ import annotations

import pytest

from netsize.report import draw_fronts, human_count, log_ticks, markdown_table, pareto_front


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


@pytest.mark.parametrize(("lo", "hi"), [(57.0, 556.0), (71.0, 93.0), (800.0, 30_000_000.0),
                                        (1000.0, 1001.0), (3.0, 7.0)])
def test_log_ticks_are_few_readable_and_inside_the_range(lo, hi):
    ticks = log_ticks(lo, hi)
    assert 2 <= len(ticks) <= 30 and all(lo <= t <= hi for t in ticks)
    assert ticks == sorted(ticks)


def test_log_ticks_prefer_1_2_5_per_decade():
    assert log_ticks(57.0, 556.0) == [100.0, 200.0, 500.0]
    assert log_ticks(800.0, 30_000.0) == [1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0]


def test_human_counts():
    assert [human_count(x) for x in (71, 1200, 25_557_032, 2e9)] == ["71", "1.2k", "25.6M",
                                                                    "2G"]


def _drawn(groups, metric="R^2"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    draw_fronts(ax, groups, "title", metric)
    fig.canvas.draw()
    return fig, ax


def test_plot_names_the_metric_labels_front_checkpoints_and_reads_its_ticks():
    points = [{"params": 500, "val_metric": 0.5, "tag": "event-001"},
              {"params": 2000, "val_metric": 0.7, "tag": "event-002"},
              {"params": 3000, "val_metric": 0.6, "tag": "final"}]  # dominated: no label
    fig, ax = _drawn({"": points})
    assert ax.get_ylabel() == "validation R^2"
    labels = {t.get_text() for t in ax.texts}
    assert labels == {"event-001", "event-002"}
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["500", "1k", "2k"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_prune_variants_get_their_own_colours():
    rows = [{"params": 1000, "val_metric": 0.9, "variant": "original", "epsilon": ""},
            {"params": 400, "val_metric": 0.88, "variant": "pruned+transfer", "epsilon": 1.0},
            {"params": 400, "val_metric": 0.85, "variant": "from-scratch", "epsilon": 1.0}]
    groups = {r["variant"]: [r] for r in rows}
    fig, ax = _drawn(groups, "accuracy")
    colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert set(colours) == {"original", "pruned+transfer", "from-scratch"}
    assert len(set(colours.values())) == 3
    assert {t.get_text() for t in ax.texts} == {"original", "eps 1.0"}
    import matplotlib.pyplot as plt

    plt.close(fig)
