"""CPU latency of original and pruned models, side by side, measured in one run.

Models: the digits MLP of recipes/digits_mlp.yaml (trained here with `run_grow` into a temporary
folder, read back with `load_original`, pruned by variability at one epsilon and transferred),
timm resnet18 and torchvision mobilenet_v3_small (random weights, 3x64x64 inputs, half their
channels removed by magnitude through Torch-Pruning). Latency is measured as `netsize prune`
measures it (`netsize.measure.latencies`): each model warmed up, then --rounds rounds alternating
the original and the pruned model, each round the median of --repeats forward passes; the table
gives the median over rounds and the spread (max / min of the rounds; above 1.5x the row is
marked noisy), at batch 1 and 64.

    python benchmarks/prune_latency.py [--threads 1] [--json out.json]
    python benchmarks/prune_latency.py --rounds 3     # fewer rounds (quicker, noisier)
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
from netsize.measure import NOISY, latencies, size_row
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


def compare(label: str, pair: tuple[nn.Module, nn.Module, tuple[int, ...]], rounds: int,
            repeats: int) -> dict[str, Any]:
    """Both models' sizes, and their latencies timed together (alternating rounds)."""
    original, pruned, shape = pair
    models = [original.cpu(), pruned.cpu()]
    rows = [size_row(m, shape) for m in models]
    for batch in (1, 64):
        for row, lat in zip(rows, latencies(models, shape, batch, rounds, repeats), strict=True):
            row[f"latency_b{batch}_ms"], row[f"spread_b{batch}"] = lat.ms, lat.spread
    return {"model": label, "original": rows[0], "pruned": rows[1]}


def _cell(before: dict[str, Any], after: dict[str, Any], batch: int, digits: int) -> str:
    """'a -> b' in ms, a '?' after a value whose rounds spread over NOISY."""
    def one(row: dict[str, Any]) -> str:
        mark = "?" if row[f"spread_b{batch}"] > NOISY else ""
        return f"{row[f'latency_b{batch}_ms']:.{digits}f}{mark}"
    return f"{one(before)} -> {one(after)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=1.05, help="digits MLP epsilon")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per model")
    parser.add_argument("--repeats", type=int, default=20, help="forward passes per round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timing = (args.rounds, args.repeats)
    rows = [compare(f"digits MLP (eps {args.epsilon})", digits_pair(args.epsilon), *timing),
            compare("timm resnet18 (50% channels)", foreign_pair("timm", "resnet18"), *timing),
            compare("torchvision mobilenet_v3_small (50%)",
                    foreign_pair("torchvision", "mobilenet_v3_small"), *timing)]
    threads = torch.get_num_threads()
    table = Table(title=f"CPU latency, original vs pruned (torch threads: {threads})")
    table.caption = (f"ms: median of {args.rounds} alternating rounds of {args.repeats} passes; "
                     f"spread: max / min of the rounds, both models (?: over {NOISY:g}x)")
    for col in ("model", "params", "FLOPs/example", "ms batch 1", "speed-up", "spread",
                "ms batch 64", "speed-up", "spread"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        o, p = r["original"], r["pruned"]
        table.add_row(r["model"], f"{o['params']:,} -> {p['params']:,}",
                      f"{o['flops']:,} -> {p['flops']:,}",
                      _cell(o, p, 1, 3), f"{o['latency_b1_ms'] / p['latency_b1_ms']:.2f}x",
                      f"{max(o['spread_b1'], p['spread_b1']):.2f}x", _cell(o, p, 64, 2),
                      f"{o['latency_b64_ms'] / p['latency_b64_ms']:.2f}x",
                      f"{max(o['spread_b64'], p['spread_b64']):.2f}x")
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
