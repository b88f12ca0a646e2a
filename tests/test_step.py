"""The training step's precision, memory format and compilation (netsize.step.Stepper)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch

from netsize.data import load_data
from netsize.errors import UserError
from netsize.graph.build import build_graph
from netsize.graph.presets import cnn
from netsize.losses import batch_loss
from netsize.recipe import load_recipe, recipe_from_dict
from netsize.step import Stepper
from netsize.train import TrainConfig, Trainer

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny"


def _batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_graph(cnn((1, 8, 8), 3, [[4], [6]], head="flatten"))


def _losses(stepper: Stepper, net: torch.nn.Module, steps: int) -> list[float]:
    x, y = _batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    return [float(stepper(net, opt, x, y, "classification")) for _ in range(steps)]


def test_bf16_on_the_cpu_runs_under_autocast_and_fits_a_batch():
    net = _cnn()
    seen: list[torch.dtype] = []
    net.ops["conv1"].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    losses = _losses(Stepper(TrainConfig(precision="bf16"), torch.device("cpu")), net, 40)
    assert seen and set(seen) == {torch.bfloat16}  # the convs ran in bf16
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the weights stay fp32
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]  # 40 Adam steps on one batch of 16 fit it


def test_fp16_scales_the_loss_and_skips_a_step_whose_gradients_overflow():
    net = _cnn()
    stepper = Stepper(TrainConfig(precision="fp16"), torch.device("cpu"))
    assert stepper.scaler is not None
    stepper.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # fp16 gradients overflow
    before = [p.detach().clone() for p in net.parameters()]
    _losses(stepper, net, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert stepper.scaler.get_scale() < 2.0**100  # the scale came down
    stepper.scaler = torch.amp.GradScaler("cpu")
    losses = _losses(stepper, net, 30)
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert losses[-1] < losses[0]


def test_channels_last_keeps_the_parameters_outputs_and_gradients():
    net, plain = _cnn(), _cnn()
    params = list(net.parameters())
    x, y = _batch()
    for model, cfg in ((net, TrainConfig(channels_last=True)), (plain, TrainConfig())):
        frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # the step changes no weight
        Stepper(cfg, torch.device("cpu"))(model, frozen, x, y, "classification")
    assert all(a is b for a, b in zip(params, net.parameters(), strict=True))
    assert net.ops["conv1"].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(net.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)
    net.eval(), plain.eval()
    torch.testing.assert_close(net(x), plain(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("changes", [["train.precision=bf16"], ["train.channels_last=true"]])
def test_a_cnn_grows_in_bf16_and_channels_last(changes: list[str]):
    recipe = load_recipe(TINY / "cnn_digits.yaml", [*changes, "grow.tau=1.0", "train.epochs=1"])
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    summary = trainer.fit()
    assert summary.events  # tau 1: any positive gain grows
    assert all(torch.isfinite(torch.tensor([r["train_loss"] for r in summary.history])))


def test_bad_precision_names_the_key():
    raw = {"data": {"source": "sklearn", "name": "iris"}, "model": {"kind": "mlp", "hidden": [4]},
           "train": {"precision": "fp8"}}
    with pytest.raises(UserError) as info:
        recipe_from_dict(raw, "r.yaml")
    assert "train.precision" in str(info.value) and "'bf16'" in str(info.value)


@pytest.mark.parametrize("backend", [
    "aot_eager",  # dynamo and AOTAutograd without code generation: seconds
    pytest.param("inductor", marks=pytest.mark.slow)])  # torch.compile's default: ~25 s here
def test_a_compiled_network_grows_and_keeps_training(backend: str,
                                                      monkeypatch: pytest.MonkeyPatch):
    """Growth replaces the network: the step compiles the new one, whose compiled loss equals
    the eager loss, the grown network's outputs equal the old one's, and it goes on training."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    recipe = load_recipe(TINY / "mlp_iris.yaml", [
        "train.compile=true", "grow.trigger=schedule", "grow.schedule.start=2",
        "grow.schedule.every=100", "grow.schedule.times=1"])
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    idx, x = torch.arange(16), trainer.splits.x_val
    for _ in range(2):
        trainer.train_step(idx)
        trainer.step += 1
    old = trainer.net
    before = old.eval()(x)
    trainer.maybe_grow()
    grown = trainer.net.eval()
    assert grown is not old and trainer.summary.events
    torch.testing.assert_close(grown(x), before, atol=1e-5, rtol=1e-5)
    grown.train()
    s = trainer.splits
    eager = batch_loss(copy.deepcopy(grown)(s.x_train[idx]), s.y_train[idx], s.task)
    start = [p.detach().clone() for p in grown.parameters()]
    losses = [float(trainer.train_step(idx)) for _ in range(3)]
    torch.testing.assert_close(torch.tensor(losses[0]), eager.detach(), atol=1e-5, rtol=1e-5)
    assert trainer.stepper.compiles == 2 and trainer.stepper.compile_seconds > 0
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(a, b) for a, b in zip(start, grown.parameters(), strict=True)
               if a.dim() > 1)  # every weight matrix, new units' included, has moved


def test_resuming_keeps_the_fp16_loss_scale():
    from netsize import resume

    recipe = load_recipe(TINY / "mlp_iris.yaml", ["train.precision=fp16", "grow.trigger=none"])
    splits = load_data(recipe.data, recipe.seed)
    trainer = Trainer(recipe, splits, torch.device("cpu"))
    trainer.train_step(torch.arange(16))
    assert trainer.stepper.scaler is not None
    trainer.stepper.scaler.update(1024.0)  # as if overflows had lowered it
    tensors, state = resume.capture(trainer, {"recipe": {}, "name": "t"})
    again = Trainer(recipe, splits, torch.device("cpu"))
    resume.restore(again, tensors, json.loads(json.dumps(state)), Path("run"))
    assert again.stepper.scaler is not None and again.stepper.scaler.get_scale() == 1024.0
