"""Growth decisions: a candidate's gain is that of the network growth builds (layer networks,
every init), every check is logged with its reason, nothing grows on the last step, and a
schedule is never cut short by max_events."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nets import batch, cnn, make_net, mlp

from netsize import growth
from netsize.graph import scores as graph_scores
from netsize.grower import Grower
from netsize.networks import LayerMoves
from netsize.recipe import GrowConfig, load_recipe
from netsize.runs.grow import run_grow

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"


@pytest.mark.parametrize("init", ["gradmax", "random", "zero_out"])
@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_layer_gain_is_eta_of_the_grown_network_minus_eta_now(init: str, family: str):
    spec = mlp([5, 4], norm=True) if family == "mlp" else cnn([[3], [4]], (2, 6, 6), norm=True)
    net = make_net(spec).double()
    x, y = batch(spec, n=8)
    x = x.double()
    cfg = GrowConfig(candidates=["width"], increment=2, damping=1e-3, init=init, tau=1e9)
    decision = growth.senn_check(net, x, y, "classification", cfg, params_now=100, seed=7)
    eta_now = graph_scores.eta(net, x, y, "classification", 1e-3)
    gains = {s["layer"]: s["gain"] for s in decision.scored}
    for cand in growth.candidates(spec, cfg, 100, seed=7):
        _, grown, _ = growth.expand(net, cand, cfg, (x, y, "classification"), torch.Generator())
        eta_grown = graph_scores.eta(grown, x, y, "classification", 1e-3)
        assert gains[cand.layer] == pytest.approx(eta_grown - eta_now, rel=1e-5, abs=1e-10)


def _grower(trigger: str, total: int, **cfg: object) -> Grower:
    config = GrowConfig(trigger=trigger, **cfg)  # type: ignore[arg-type]
    return Grower(config, LayerMoves(), total, torch.Generator().manual_seed(0))


def test_no_growth_on_the_last_step_and_schedule_ignores_max_events():
    senn = _grower("senn", 100, check_every=10, cooldown=0)
    assert senn.due(90) and not senn.due(100)
    schedule = _grower("schedule", 1000, max_events=1,
                       schedule={"start": 10, "every": 10, "times": 5, "amount": 0.5})
    schedule.events = 3  # past max_events: the schedule still makes all its steps
    assert [s for s in range(0, 100) if schedule.due(s)] == [10, 20, 30, 40, 50]


def test_every_check_is_logged_with_its_reason(tmp_path: Path):
    recipe = load_recipe(TINY / "mlp_iris.yaml", ["grow.trigger=senn", "grow.tau=1000000",
                                                  "grow.check_every=2", "grow.cooldown=0"])
    result = run_grow(recipe, tmp_path / "run")
    checks = result.summary.checks
    assert checks and not result.summary.events
    assert all(not c["grew"] and "tau" in c["reason"] and c["candidates"] for c in checks)
    assert (tmp_path / "run" / "checks.json").is_file()
    assert "did not grow" in result.info["growth_stopped"]
    assert "why the size stopped" in (tmp_path / "run" / "report.md").read_text()
