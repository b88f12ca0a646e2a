"""CIFAR-shaped training throughput: netsize's step against a hand-written loop, SECNN and WRN.

Models: the networks recipes/cifar10.yaml (`secnn`, 9,024 parameters) and recipes/gradmax_wrn.yaml
(`wrn`: WRN-28-1 with block widths at GradMax's start of 0.25, 24,490 parameters) build, at that
fixed size (grow.trigger=none). Data: no CIFAR-10 files are on the machines this was written on,
so both sides train on synthetic CIFAR-shaped tensors (8 batches of N x 3 x 32 x 32 standard
normal images, 10 random classes) created directly on the device; the benchmark times the
training step only (no data loading, no evaluation). Augmentation is off on both sides
(data.augment crop_padding 0, flip false): both run the same forward, loss, backward and step.

netsize: `Trainer.train_step` (its `Stepper`: train.precision, train.channels_last, train.compile).
hand: what a user writes: an nn.Module of nn.Conv2d / nn.BatchNorm2d / nn.ReLU or nn.LeakyReLU /
nn.MaxPool2d / torch.cat (SECNN) or the standard pre-activation WRN basic block (BN-ReLU-conv,
a 1x1 projection of the pre-activated input where the shape changes), loaded with netsize's
initial weights (the layers are declared in netsize's node order; equal parameter counts are
asserted), the recipe's torch optimizer and per-step cosine schedule (WRN: SGD Nesterov 0.9, lr
0.1, weight decay 2e-4, cosine; SECNN: Adam 2e-3), batches of the recipe's size (or --batch)
drawn by index from the same tensors, and the plain step: zero_grad, F.cross_entropy(model(x),
y), backward, step. The hand loop follows the same --set train.* keys the way a user writes them:
torch.autocast (and a GradScaler for fp16), channels_last weights and batches, torch.compile.

Both sides are warmed up, then alternate for --rounds rounds of --steps steps (which goes first
alternates too); on CUDA the clock is read after torch.cuda.synchronize. The table gives images/s
(median over rounds) and the ratio netsize / hand: the median of the per-round ratios, with
their range, against the goal >= 0.97.

    python benchmarks/cifar_throughput.py                     # CPU, 1 thread: ~1.5 min
    python benchmarks/cifar_throughput.py --device cuda --steps 50 --rounds 10
    python benchmarks/cifar_throughput.py --device cuda --set train.precision=bf16 \\
        --set train.channels_last=true
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hand_loop import alternate, copy_state, table
from rich.console import Console
from torch import nn

from netsize import Recipe, load_recipe
from netsize.data import Splits
from netsize.errors import UserError
from netsize.step import DTYPES
from netsize.train import Trainer, make_optimizer, make_scheduler

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"secnn": ROOT / "recipes" / "cifar10.yaml", "wrn": ROOT / "recipes" / "gradmax_wrn.yaml"}
BATCHES = 8  # synthetic training set: this many batches of images
SHAPE, CLASSES = (3, 32, 32), 10


# ------------------------------------------------------------------------ hand-written models
class Secnn(nn.Module):
    """SECNN's start network: three conv(bias)-dropout-BN-LeakyReLU(0.2)-max pool blocks; block
    1's output pooled twice more and concatenated with block 3's; 1x1 conv to 10 channels;
    Linear-BN1d-LeakyReLU-dropout-BN1d-Linear on the flattened 10 x 4 x 4 map."""

    def __init__(self, width: int = 16, classes: int = CLASSES):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.Dropout(0.1),
                          nn.BatchNorm2d(width), nn.LeakyReLU(0.2), nn.MaxPool2d(2))
            for c_in in (SHAPE[0], width, width))
        self.mix = nn.Sequential(nn.Conv2d(2 * width, 10, 1), nn.LeakyReLU(0.2), nn.Flatten())
        side = SHAPE[1] // 8
        self.head = nn.Sequential(nn.Linear(10 * side * side, 20), nn.BatchNorm1d(20),
                                  nn.LeakyReLU(0.2), nn.Dropout(0.05), nn.BatchNorm1d(20),
                                  nn.Linear(20, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, classes)
        first = self.blocks[0](x)  # (N, width, 16, 16)
        last = self.blocks[2](self.blocks[1](first))  # (N, width, 4, 4)
        skip = F.max_pool2d(F.max_pool2d(first, 2), 2)  # (N, width, 4, 4)
        return self.head(self.mix(torch.cat([skip, last], dim=1)))  # type: ignore[no-any-return]


class PreActBlock(nn.Module):
    """WRN's basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the input, or a 1x1
    conv of the pre-activated input where the stride or the width changes."""

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        same = stride == 1 and c_in == width
        self.shortcut = None if same else nn.Conv2d(c_in, width, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return (x if self.shortcut is None else self.shortcut(h)) + y


class WideResNet(nn.Module):
    """WRN-depth-widen: a 3x3 stem of 16 channels, three stages of (depth - 4) / 6 blocks of
    widths 16k, 32k, 64k (times width_multiplier; stride 2 into stages 2 and 3), BN-ReLU,
    global average pooling, linear."""

    def __init__(self, depth: int = 28, widen: int = 1, width_multiplier: float = 1.0,
                 classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Conv2d(SHAPE[0], 16, 3, padding=1, bias=False)
        blocks, c_in = [], 16
        for s, base in enumerate((16, 32, 64)):
            width = max(1, round(base * widen * width_multiplier))
            for i in range((depth - 4) // 6):
                blocks.append(PreActBlock(c_in, width, 2 if s > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, classes)
        h = F.relu(self.bn(self.blocks(self.stem(x))))  # (N, 64k, 8, 8)
        return self.fc(h.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def hand_model(recipe: Recipe) -> nn.Module:
    """The hand-written equivalent of the recipe's secnn or wrn model."""
    m = recipe.model
    if m.kind == "secnn":
        return Secnn(m.width)  # type: ignore[union-attr]
    if m.kind == "wrn":
        return WideResNet(m.depth, m.widen, m.width_multiplier)  # type: ignore[union-attr]
    raise UserError(f"model.kind: {m.kind} has no hand-written model here; keep secnn or wrn.")


# ------------------------------------------------------------------------------- the two sides
def synthetic_splits(n: int, device: torch.device) -> Splits:
    """n CIFAR-shaped standard normal images and random labels, made on the device."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, *SHAPE, generator=gen, device=device)  # (n, 3, 32, 32)
    y = torch.randint(0, CLASSES, (n,), generator=gen, device=device)  # (n,)
    return Splits(x, y, x[:2], y[:2], x[:2], y[:2], "classification", SHAPE, CLASSES)


class HandStep:
    """The loop a user writes, with the recipe's optimizer, schedule and train.* settings."""

    def __init__(self, trainer: Trainer):
        cfg, self.device = trainer.recipe.train, trainer.device
        self.net = hand_model(trainer.recipe).to(self.device)
        copy_state(trainer.net, self.net)  # identical start
        self.net.train()
        self.channels_last = cfg.channels_last
        if cfg.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if cfg.compile else self.net
        self.opt = make_optimizer(self.net, cfg)  # torch.optim.SGD / Adam / AdamW itself
        sched = make_scheduler(self.opt, cfg, trainer.total_steps)
        self.sched = sched if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) \
            else None  # a plateau schedule steps per epoch, outside the step
        self.dtype = DTYPES[cfg.precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.x, self.y = trainer.splits.x_train, trainer.splits.y_train

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        xb, yb = self.x[idx], self.y[idx]
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        mixed = self.dtype is not None
        with torch.autocast(self.device.type, self.dtype) if mixed else contextlib.nullcontext():
            loss = F.cross_entropy(self.forward(xb), yb)
        self.opt.zero_grad()
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        if self.sched is not None:
            self.sched.step()
        return loss.detach()


def make_trainer(model: str, device: torch.device, args: argparse.Namespace) -> Trainer:
    changes = ["grow.trigger=none", "data.augment.crop_padding=0", "data.augment.flip=false",
               *([f"train.batch_size={args.batch}"] if args.batch else []), *args.set]
    recipe = load_recipe(RECIPES[model], changes)
    return Trainer(recipe, synthetic_splits(recipe.train.batch_size * BATCHES, device), device)


def compare(model: str, device: torch.device, args: argparse.Namespace, err: Console) -> dict:
    trainer = make_trainer(model, device, args)
    trainer.net.train()
    hand = HandStep(trainer)
    params = sum(p.numel() for p in trainer.net.parameters())
    assert params == sum(p.numel() for p in hand.net.parameters()), "same parameter count"
    bs = trainer.recipe.train.batch_size
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(trainer.splits.x_train), generator=gen).to(device)
    timing = alternate({"netsize": trainer.train_step, "hand": hand}, perm, bs, args.steps,
                       args.rounds, model, err)
    return {"model": model, "architecture": trainer.net.spec.describe(), "params": params,
            "batch_size": bs, "optimizer": trainer.recipe.train.optimizer,
            "threads": torch.get_num_threads(), **timing}


# ----------------------------------------------------------------------------------- the CLI
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps per timed round (0: 4 on the CPU, 100 on CUDA)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating timed rounds")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0: the recipe's)")
    parser.add_argument("--models", default="secnn,wrn", help="comma-separated: secnn, wrn")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="train.* or model.* override for both sides, e.g. "
                             "train.precision=bf16, train.channels_last=true, train.compile=true")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    args.models = args.models.split(",")
    if unknown := [m for m in args.models if m not in RECIPES]:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from secnn, wrn")
    if bad := [s for s in args.set if not s.startswith(("train.", "model."))]:
        parser.error(f"--set {bad[0]}: only train.* and model.* keys apply to both sides")
    if min(args.rounds, args.threads) < 1 or min(args.steps, args.batch) < 0:
        parser.error("--rounds and --threads must be at least 1, --steps and --batch at least 0")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available; use --device cpu")
    args.steps = args.steps or (100 if args.device.startswith("cuda") else 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)
    try:
        results = [compare(m, device, args, err) for m in args.models]
    except UserError as exc:  # a --set value the recipe refuses
        err.print(f"error: {exc}", highlight=False, markup=False)
        return 2
    rows = [{**r, "model": f"{r['model']} ({r['params']:,} params, batch {r['batch_size']})"}
            for r in results]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    out.print(table(rows, f"Training steps, synthetic CIFAR-shaped data on {name}"
                    f"{' '.join(['', *args.set])}: median of {args.rounds} alternating rounds x "
                    f"{args.steps} steps", "images/s", ",.0f"))
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "cifar_throughput", "device": name,
                                         "set": args.set, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
