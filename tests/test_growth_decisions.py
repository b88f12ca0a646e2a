"""Growth decisions: a candidate's gain is that of the network growth builds (every init, the
candidate's own draw), every check is logged with its reason, nothing grows on the last step,
and a schedule is never cut short by max_events."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import graphs
import pytest
import torch
from graphs import batch, make

from netsize.graph import grow
from netsize.graph import scores as graph_scores
from netsize.grower import Grower
from netsize.model import count_params
from netsize.networks import GraphMoves
from netsize.recipe import GrowConfig, load_recipe
from netsize.runs.grow import run_grow

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"
TASK = "classification"


def _data(spec, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, spec.n_outputs, (n,), generator=torch.Generator().manual_seed(2))
    return batch(spec, n), y


@pytest.mark.parametrize("init", ["gradmax", "random", "zero_out"])
@pytest.mark.parametrize("family", ["mlp", "stage_cnn", "flatten_cnn", "resnet"])
def test_gain_is_eta_of_the_grown_network_minus_eta_now(init: str, family: str):
    """Each scored gain is eta(build(candidate)) - eta(now): the candidate's own draw (random
    fan-outs and zero_out's random fan-ins included), rebuilt here from candidates + build."""
    spec = graphs.FAMILIES[family]()
    net = make(spec)
    x, y = _data(spec)
    cfg = GrowConfig(candidates=["width", "depth"], increment=2, damping=1e-3, init=init,
                     tau=1e9, coupled=True, max_layers=64)
    params = count_params(net)
    decision = grow.senn_check(net, (x, y, TASK), cfg, params_now=params, seed=7)
    assert decision.chosen is None and decision.built is None  # tau 1e9: nothing passes
    eta_now = graph_scores.eta(net, x, y, TASK, 1e-3)
    assert decision.eta == pytest.approx(eta_now, rel=1e-12)
    gains = {(s["kind"], s["target"]): s["gain"] for s in decision.scored}
    cands = grow.candidates(spec, cfg, params, seed=7)
    assert len(gains) == len(cands) == len(decision.scored)
    assert {c.kind for c in cands} == {"width", "depth"}
    for cand in cands:
        _, grown, _ = grow.build(net, cand, cfg, (x, y, TASK))
        eta_grown = graph_scores.eta(grown, x, y, TASK, 1e-3)
        assert gains[(cand.kind, cand.target)] == pytest.approx(eta_grown - eta_now, rel=1e-5,
                                                                abs=1e-10)


@pytest.mark.parametrize("init", ["gradmax", "random", "zero_out"])
def test_the_chosen_network_is_the_one_scored(init: str):
    """build is deterministic in (net, candidate, batch): the network a check keeps for its
    winner, a rebuild and the network GraphMoves.apply swaps in hold the same tensors."""
    spec = graphs.secnn()
    net = make(spec)
    x, y = _data(spec)
    cfg = GrowConfig(candidates=["width"], increment=2, init=init, tau=1.0)
    decision = grow.senn_check(net, (x, y, TASK), cfg, count_params(net), seed=3)
    assert decision.chosen is not None and decision.built is not None
    again = grow.build(net, decision.chosen, cfg, (x, y, TASK))
    applied, _, record = GraphMoves.apply(net, decision, cfg, (x, y, TASK),
                                          torch.Generator().manual_seed(99))
    assert applied is decision.built[1]  # not built a second time
    assert [record["gain"]] == [s["gain"] for s in decision.scored
                                if s["target"] == decision.chosen.target]
    for name, value in decision.built[1].state_dict().items():
        assert torch.equal(value, again[1].state_dict()[name]), name
    other = grow.build(net, replace(decision.chosen, seed=decision.chosen.seed + 1), cfg,
                       (x, y, TASK))
    differs = any(not torch.equal(v, other[1].state_dict()[n])
                  for n, v in again[1].state_dict().items())
    assert differs == (init != "gradmax")  # gradmax's fan-out is the SVD's, not a draw


def _grower(trigger: str, total: int, **cfg: object) -> Grower:
    config = GrowConfig(trigger=trigger, **cfg)  # type: ignore[arg-type]
    return Grower(config, GraphMoves(), total, torch.Generator().manual_seed(0))


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


def test_senn_repeat_rule_grows_until_no_candidate_passes(tmp_path: Path):
    base = ["grow.trigger=senn", "grow.tau=1.0", "grow.check_every=4", "grow.cooldown=100",
            "grow.candidates=[width]", "grow.max_width=1000", "train.epochs=1"]
    once = run_grow(load_recipe(TINY / "mlp_iris.yaml", base), tmp_path / "once")
    repeated = run_grow(load_recipe(TINY / "mlp_iris.yaml", [*base, "grow.repeat=true",
                                                              "grow.max_events=5"]),
                        tmp_path / "repeat")
    first_step = once.summary.events[0]["step"]
    assert [e["step"] for e in once.summary.events].count(first_step) == 1
    at_first = [e for e in repeated.summary.events if e["step"] == first_step]
    assert len(at_first) > 1  # several expansions within one check
    checks = [c for c in repeated.summary.checks if c["step"] == first_step]
    assert len(checks) == len(at_first) + (0 if len(at_first) == 5 else 1)
    assert all(c["grew"] for c in checks[: len(at_first)])
