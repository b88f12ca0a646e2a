"""The training script a user would write by hand for Fashion-MNIST, for `hand_loop.py --whole`.

It does the work `netsize train recipes/fashion_mnist.yaml` does, with nothing from netsize: read
the gzipped idx files of Debian's dataset-fashion-mnist, keep the first --limit training images,
hold out 10% for validation (seeded), standardise with the training mean and standard deviation,
build the stage CNN from nn.Conv2d / nn.BatchNorm2d / nn.ReLU / nn.MaxPool2d and a linear head,
train with Adam and a per-step cosine schedule over batches drawn by index from the tensors,
evaluate validation and test sets after every epoch (eval mode, inference mode, batches of
1024), keep the best validation state, and save the final and best weights (safetensors).

    python benchmarks/hand_train.py --stages 16,32 --epochs 3 --limit 10000 --out /tmp/hand
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

FOLDER = Path("/usr/share/datasets/fashion-mnist")


def read_idx(name: str) -> np.ndarray:
    data = gzip.decompress((FOLDER / name).read_bytes())
    ndim = data[3]
    shape = np.frombuffer(data, ">u4", ndim, 4).astype(int)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(limit: int, seed: int) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(read_idx("train-images-idx3-ubyte.gz")[:limit].copy()).float() / 255
    y = torch.from_numpy(read_idx("train-labels-idx1-ubyte.gz")[:limit].astype(np.int64))
    x_test = torch.from_numpy(read_idx("t10k-images-idx3-ubyte.gz").copy()).float() / 255
    y_test = torch.from_numpy(read_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = len(x) // 10
    val, train = perm[:n_val], perm[n_val:]
    mean, std = x[train].mean(), x[train].std()
    x, x_test = (((t - mean) / std).unsqueeze(1) for t in (x, x_test))  # (N, 1, 28, 28)
    return x[train], y[train], x[val], y[val], x_test, y_test


def hand_cnn(stages: list[int], side: int = 28, classes: int = 10) -> nn.Sequential:
    """One conv-BN-ReLU-max pool block per width, then a linear layer on the flattened map."""
    layers: list[nn.Module] = []
    channels = 1
    for width in stages:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                   nn.MaxPool2d(2)]
        channels, side = width, side // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, classes))


@torch.inference_mode()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    out = torch.cat([net(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    net.train()
    return float((out.argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="16,32", help="one width per conv block")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y, x_val, y_val, x_test, y_test = load(args.limit, args.seed)
    net = hand_cnn([int(w) for w in args.stages.split(",")])
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    n, bs = len(x), args.batch_size
    steps = n // bs + (1 if n % bs > 1 else 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * args.epochs)
    best, best_state = -1.0, {}
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n)
        loss_sum = torch.zeros(())
        for b in range(steps):
            idx = perm[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        val, test = accuracy(net, x_val, y_val), accuracy(net, x_test, y_test)
        print(f"epoch {epoch}: loss {float(loss_sum) / steps:.4f} val {val:.4f} test {test:.4f}")
        if val > best:
            best, best_state = val, {k: v.detach().clone() for k, v in net.state_dict().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(args.out / "final.safetensors"))
    save_file(best_state, str(args.out / "best.safetensors"))
    print(f"wall {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
