"""CPU latency of original and pruned models, side by side, measured in one run.

Models: the digits MLP of recipes/digits_mlp.yaml (trained here with `run_grow` into a temporary
folder, read back with `load_original`, pruned by variability at one epsilon and transferred),
timm resnet18 and torchvision mobilenet_v3_small (random weights, 3x64x64 inputs, half their
channels removed by magnitude through Torch-Pruning). Latency is the median forward time over 50
runs after 10 warm-up runs, at batch 1 and 64.

    python benchmarks/prune_latency.py [--threads 1] [--json out.json]
    python benchmarks/prune_latency.py --quick     # one round per model instead of 3 (noisier)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from netsize import derive, foreign, load_original, load_recipe, run_grow
from netsize.architecture import ForeignModelConfig
from netsize.measure import size_row
from netsize.runs.prune import prune_once

ROOT = Path(__file__).resolve().parent.parent


def digits_pair(epsilon: float) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    recipe = derive(load_recipe(ROOT / "recipes" / "digits_mlp.yaml"), {"grow.trigger": "none"},
                    "benchmarks/prune_latency.py")
    with tempfile.TemporaryDirectory(prefix="netsize-prune-latency-") as folder:
        trained = run_grow(recipe, folder, name="digits_mlp", device="cpu")
        original, splits = load_original(trained.run_dir / "checkpoints" / "best")
    pruned = prune_once(original, splits, epsilon, torch.device("cpu"))
    return original.net, pruned.net, splits.input_shape


def foreign_pair(kind: str, name: str) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    shape = (3, 64, 64)
    cfg = ForeignModelConfig.model_validate({"kind": kind, "name": name})
    model = foreign.create_model(cfg, shape, 10)
    small, _ = foreign.prune_channels(model, torch.randn(2, *shape), "magnitude", 0.5)
    return model, small, shape


def compare(label: str, pair: tuple[nn.Module, nn.Module, tuple[int, ...]],
            rounds: int = 3) -> dict[str, Any]:
    """Alternate the two models `rounds` times; keep each one's fastest median (least noise)."""
    original, pruned, shape = pair
    before, after = size_row(original.cpu(), shape), size_row(pruned.cpu(), shape)
    for _ in range(rounds - 1):
        for row, model in ((before, original), (after, pruned)):
            again = size_row(model, shape)
            for key in ("latency_b1_ms", "latency_b64_ms"):
                row[key] = min(row[key], again[key])
    return {"model": label, "original": before, "pruned": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=1.05, help="digits MLP epsilon")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true",
                        help="time each model in 1 round instead of 3 (same models, noisier)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else 3
    rows = [compare(f"digits MLP (eps {args.epsilon})", digits_pair(args.epsilon), rounds),
            compare("timm resnet18 (50% channels)", foreign_pair("timm", "resnet18"), rounds),
            compare("torchvision mobilenet_v3_small (50%)",
                    foreign_pair("torchvision", "mobilenet_v3_small"), rounds)]
    threads = torch.get_num_threads()
    table = Table(title=f"CPU latency, original vs pruned (torch threads: {threads})")
    for col in ("model", "params", "FLOPs/example", "ms batch 1", "speed-up", "ms batch 64",
                "speed-up"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        o, p = r["original"], r["pruned"]
        table.add_row(r["model"], f"{o['params']:,} -> {p['params']:,}",
                      f"{o['flops']:,} -> {p['flops']:,}",
                      f"{o['latency_b1_ms']:.3f} -> {p['latency_b1_ms']:.3f}",
                      f"{o['latency_b1_ms'] / p['latency_b1_ms']:.2f}x",
                      f"{o['latency_b64_ms']:.2f} -> {p['latency_b64_ms']:.2f}",
                      f"{o['latency_b64_ms'] / p['latency_b64_ms']:.2f}x")
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
