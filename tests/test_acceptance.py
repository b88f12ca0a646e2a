"""The offline default end to end (minutes on 2 cores): `nox -s slow` or `pytest -m slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netsize import load_checkpoint, load_recipe, run_grow
from netsize.data import load_data
from netsize.train import evaluate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_digits_recipe_grows_and_reaches_95_percent(tmp_path: Path):
    recipe = load_recipe(ROOT / "recipes" / "digits.yaml")
    result = run_grow(recipe, tmp_path, name="digits", device="cpu")
    summary, front = result.summary, result.front
    assert len(summary.events) >= 2
    best = max(r["val_metric"] for r in summary.history)
    assert best >= 0.95
    info = json.loads((tmp_path / "summary.json").read_text())
    assert info["best_val"] == pytest.approx(best)
    splits = load_data(recipe.data, recipe.seed)
    for folder in (tmp_path / "checkpoints").iterdir():
        net, meta = load_checkpoint(folder)
        _, val = evaluate(net, splits.x_val, splits.y_val, splits.task)
        assert val == pytest.approx(meta["val_metric"], abs=1e-6)
    assert front[-1]["val_metric"] == pytest.approx(max(p["val_metric"] for p in front))
