"""Seeded fuzzing of recipes: every mutated recipe is either refused with one UserError line or
accepted, and an accepted one actually plans (and, for a sample, trains and grows).

The mutants start from every recipe under recipes/ and recipes/tiny/: keys deleted, unknown keys
added, values replaced by strings, huge and negative numbers, floats, booleans, inf/nan, None,
empty and deeply nested lists; sections swapped; model.kind / data.source / data.name changed;
wrong stages and width lists. About a sixth are attacked at the YAML level instead (duplicate
keys, alias bombs and recursive aliases in search.space.*.choices, non-UTF-8 bytes, NUL and
control characters, deep nesting, tags, merge keys, truncation, oversize files). Each mutant is
reproducible from its index: `mutant(i)` uses its own `random.Random(f"{SEED}:{i}")`.

The default test loads, plans and trains a sample; the slow one (`nox -s slow`) trains every
accepted native recipe for one epoch through `run_grow`.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from netsize.architecture import NATIVE
from netsize.cli import app
from netsize.data import Splits, TorchvisionData, load_data
from netsize.errors import UserError
from netsize.memory import ENV_VAR
from netsize.preflight import check_data, plan_network
from netsize.recipe import Recipe, derive, load_recipe, recipe_to_dict
from netsize.runs.grow import run_grow
from netsize.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
BASE_FILES = sorted((ROOT / "recipes" / "tiny").glob("*.yaml")) + sorted(
    (ROOT / "recipes").glob("*.yaml"))
SEED = 20_240_611
N_MUTANTS = 1_200
N_TRAINED = 20
N_CLI = 40  # mutants run through `netsize grow`
# A fixed memory budget for the preflight check: the same recipes pass on every machine, and
# nothing these tests accept can ask for more than a couple of GiB.
MEMORY_BYTES = str(2 << 30)
MAX_MESSAGE = 600  # characters: a refusal is one short line, never a dump of the input

# --------------------------------------------------------------------------------- value pools
MARK = "ZZMARKZZ"  # a plain YAML word replaced by raw YAML text after dumping


def _nested(depth: int, leaf: Any = 4) -> Any:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    return value


HUGE = [10**12, 2**64, 2**63, 2**31, 2**32, 10**100, -(2**63), -(10**12)]
ODD = [0, -1, -7, 0.5, 1.0, 2.5, -0.0, 1e-300, 1e308, math.inf, -math.inf, math.nan]
SMALL = [1, 2, 3, 4, 8, 16]
STRINGS = ["", "abc", "relu", "mlp", "cnn", "digits", "iris", "none", "null", "1e3", "yes", "~",
           "éè", "a" * 300, "../../etc/passwd", "/dev/zero", " ", "0x10", "1_000"]
LISTS = [[], [1], [4, 4], [[4], [4]], [[]], ["a"], [None], [1.5], [True], [-1], [10**12],
         _nested(4), _nested(20), _nested(31), _nested(40), [[4]] * 7, list(range(40))]
DICTS = [{}, {"a": 1}, {"kind": "mlp"}, {"source": "sklearn"}, {"x": {"y": {"z": [1]}}}]


def random_value(rng: random.Random) -> Any:
    pool = rng.choice([HUGE, ODD, SMALL, STRINGS, [True, False], [None], LISTS, DICTS])
    return copy.deepcopy(rng.choice(pool))


def _widths(rng: random.Random) -> list[Any]:
    good = [1, 2, 3, 4, 8, 16, 32]
    bad = [0, -1, 65_537, 10**8, 1.5, True, "4", None, [4], 2**64]
    return [rng.choice(bad if rng.random() < 0.1 else good) for _ in range(rng.randint(0, 6))]


def _stages(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice([[4, 4], [[4], []], [[[4]]], [], [[]], [[4]] * 7, [[4]] * 600, "4"])
    return [_widths(rng) or [4] for _ in range(rng.randint(1, 5))]


# dotted key -> values worth trying there: valid ones, edges, and huge ones that must be refused
TARGETED: dict[str, Callable[[random.Random], Any]] = {
    "seed": lambda r: r.choice([0, 1, 2**32 - 1, 2**32, -1, 18446744073709551616, 1.0, True]),
    "model.kind": lambda r: r.choice(["mlp", "cnn", "timm", "torchvision", "resnet", "", None]),
    "model.hidden": lambda r: r.choice([_widths(r), _widths(r), [65_536, 65_536], [4] * 100,
                                         [4] * 513, [100_000_000], [[4]], 4]),
    "model.stages": _stages,
    "model.kernel_size": lambda r: r.choice([1, 3, 5, 2, 7, 0]),
    "model.norm": lambda r: r.choice(["none", "batch", "layer", True]),
    "model.activation": lambda r: r.choice(["relu", "leaky_relu", "gelu", "tanh", "swish"]),
    "model.dropout": lambda r: r.choice([0.0, 0.5, 0.99, 1.0, -0.1, 0]),
    "model.name": lambda r: r.choice(["resnet18", "mobilenet_v3_small", "", "x" * 300]),
    "model.weights": lambda r: r.choice(["missing.safetensors", "table.csv", None, ""]),
    "model.num_classes": lambda r: r.choice([1, 10, 0, 65_537]),
    "data.source": lambda r: r.choice(["sklearn", "torchvision", "csv", "synthetic", "pandas"]),
    "data.name": lambda r: r.choice(["digits", "iris", "wine", "breast_cancer", "diabetes",
                                     "CIFAR10", "MNIST", "FashionMNIST", "teacher_student",
                                     "boston"]),
    "data.as_image": lambda r: r.choice([True, False, "yes", 1]),
    "data.n_samples": lambda r: r.choice([10, 11, 12, 30, 200, 9, 0, 10**12, 2**64]),
    "data.in_features": lambda r: r.choice([1, 3, 10, 0, 10**7]),
    "data.out_features": lambda r: r.choice([1, 2, 10, 0, 65_537]),
    "data.teacher_hidden": lambda r: r.choice([1, 10, 0, 65_537]),
    "data.noise": lambda r: r.choice([0.0, 0.1, 1e6, 1e7, math.nan, -1.0]),
    "data.val_fraction": lambda r: r.choice([0.01, 0.15, 0.49, 0.5, 0.0, 1e-9, 0.4]),
    "data.test_fraction": lambda r: r.choice([0.01, 0.15, 0.49, 0.5, 0.0, 1e-9, 0.4]),
    "data.standardize": lambda r: r.choice([True, False]),
    "data.augment": lambda r: r.choice([{"crop_padding": 2, "flip": True}, {"crop_padding": 17},
                                        {"flip": True}, {}]),
    "data.path": lambda r: r.choice(["table.csv", "reg.csv", "latin1.csv", "empty.csv",
                                     "missing.csv", ".", "/dev/null", "m0000.yaml"]),
    "data.target": lambda r: r.choice(["y", "a", "missing", ""]),
    "data.task": lambda r: r.choice(["auto", "classification", "regression", "ranking"]),
    "data.root": lambda r: r.choice(["data", ".", "/nonexistent"]),
    "data.download": lambda r: r.choice([False, "no"]),
    "data.limit": lambda r: r.choice([1, 100, 0, 10**12]),
    "train.epochs": lambda r: r.choice([1, 2, 0, 100_000, 100_001, 10**9, True, 1.0]),
    "train.batch_size": lambda r: r.choice([1, 2, 3, 16, 64, 1_000_000, 1_000_001, 0]),
    "train.optimizer": lambda r: r.choice(["sgd", "adam", "adamw", "rmsprop"]),
    "train.lr": lambda r: r.choice([1e-3, 0.1, 1e3, 1e4, 0.0, 1]),
    "train.momentum": lambda r: r.choice([0.0, 0.9, 1.0]),
    "train.nesterov": lambda r: r.choice([True, False]),
    "train.weight_decay": lambda r: r.choice([0.0, 0.1, 1e3, -1.0]),
    "train.scheduler": lambda r: r.choice(["none", "cosine", "plateau", "step"]),
    "train.eval_batch_size": lambda r: r.choice([1, 7, 1024, 0]),
    "grow.trigger": lambda r: r.choice(["none", "senn", "schedule", "always"]),
    "grow.init": lambda r: r.choice(["gradmax", "random", "zero_out", "ones"]),
    "grow.candidates": lambda r: r.choice([[], ["width"], ["depth"], ["width", "depth"],
                                           ["width", "width"], ["breadth"], "width"]),
    "grow.tau": lambda r: r.choice([1.0, 1.0001, 1.2, 1e12, 0.5]),
    "grow.alpha": lambda r: r.choice([0.0, 1e12, -1.0]),
    "grow.lambda_n": lambda r: r.choice([0.0, 1e-6, 1e12]),
    "grow.damping": lambda r: r.choice([1e-3, 1e-300, 1e12, 0.0]),
    "grow.check_every": lambda r: r.choice([1, 2, 50, 0]),
    "grow.cooldown": lambda r: r.choice([0, 1, 100]),
    "grow.increment": lambda r: r.choice([1, 2, 64, 65_536, 0]),
    "grow.fanout_scale": lambda r: r.choice([1e-9, 0.5, 1e3]),
    "grow.score_batch": lambda r: r.choice([2, 3, 64, 1_000_000, 1]),
    "grow.max_width": lambda r: r.choice([1, 4, 64, 65_536]),
    "grow.max_layers": lambda r: r.choice([1, 2, 8, 512]),
    "grow.max_params": lambda r: r.choice([1, 100, 10**6, 10**10, 10**11]),
    "grow.max_events": lambda r: r.choice([0, 1, 50]),
    "grow.schedule.start": lambda r: r.choice([0, 1, 10]),
    "grow.schedule.every": lambda r: r.choice([1, 2, 0]),
    "grow.schedule.times": lambda r: r.choice([1, 3, 512, 513]),
    "grow.schedule.amount": lambda r: r.choice([1e-9, 0.2, 64.0, 2147483648, math.inf]),
    "prune.epsilon": lambda r: r.choice([[0.5], 0.5, [], [-1.0], [math.nan]]),
    "search.sampler_seed": lambda r: r.choice([0, -1, 2**32]),
    "search.trials": lambda r: r.choice([1, 0, 10**12]),
    "search.space": lambda r: r.choice([
        {"train.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
        {"grow.increment": {"type": "categorical", "choices": [2, 4]}},
        {"x": {"type": "int", "low": 2, "high": 1}}, {"x": {"type": "categorical"}},
        {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, {"x": []}]),
    "compare.width_factors": lambda r: r.choice([[1.0], [], [0.0], [1e4]]),
}
SECTIONS = ["data", "model", "train", "grow", "prune", "search", "compare"]
UNKNOWN_KEYS = ["epochz", "extra", "Model", "data ", "hidden_size", 1, True, "__class__"]


# ---------------------------------------------------------------------------- tree mutations
def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into nested dicts (sections and leaves)."""
    if not isinstance(tree, dict):
        return []
    out = []
    for key, value in tree.items():
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _set(tree: dict[Any, Any], path: tuple[Any, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _delete(tree: dict[Any, Any], path: tuple[Any, ...]) -> None:
    node = tree
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def _all_leaf_paths() -> list[tuple[str, ...]]:
    """Every dotted key of every base recipe with its defaults filled in."""
    found: set[tuple[str, ...]] = set()
    for file in BASE_FILES:
        found.update(_paths(recipe_to_dict(load_recipe(file))))
    return sorted(found)


# keys that belong to each data source and model kind: most targeted changes stay plausible
FITTING = {
    ("data", "sklearn"): ["name", "as_image"],
    ("data", "synthetic"): ["n_samples", "in_features", "out_features", "teacher_hidden", "noise"],
    ("data", "csv"): ["path", "target", "task"],
    ("data", "torchvision"): ["name", "root", "download", "limit"],
    ("model", "mlp"): ["hidden", "activation", "norm", "dropout"],
    ("model", "cnn"): ["stages", "kernel_size", "activation", "norm"],
}
COMMON = {"data": ["val_fraction", "test_fraction", "standardize", "augment"], "model": []}


def _op_targeted(tree: dict, rng: random.Random) -> str:
    key = rng.choice(sorted(TARGETED))
    section, _, _ = key.partition(".")
    node = tree.get(section)
    tag = node.get("source" if section == "data" else "kind") if isinstance(node, dict) else None
    fitting = FITTING.get((section, tag)) if isinstance(tag, str) else None
    if fitting and rng.random() < 0.8:
        key = f"{section}.{rng.choice(fitting + COMMON[section])}"
    value = TARGETED[key](rng)
    _set(tree, tuple(key.split(".")), value)
    return f"set {key}={_short(value)}"


def _op_random(tree: dict, rng: random.Random) -> str:
    path = rng.choice(_paths(tree) or [("seed",)]) if rng.random() < 0.6 else \
        rng.choice(_leaf_paths())
    value = random_value(rng)
    _set(tree, path, value)
    return f"set {'.'.join(map(str, path))}={_short(value)}"


def _op_delete(tree: dict, rng: random.Random) -> str:
    paths = _paths(tree)
    if not paths:
        return "delete nothing"
    path = rng.choice(paths)
    _delete(tree, path)
    return f"delete {'.'.join(map(str, path))}"


def _op_unknown(tree: dict, rng: random.Random) -> str:
    sections = [p for p in _paths(tree) if isinstance(_get(tree, p), dict)]
    where = rng.choice([(), *sections])
    key = rng.choice(UNKNOWN_KEYS)
    node = _get(tree, where) if where else tree
    node[key] = random_value(rng)
    return f"add unknown {'.'.join(map(str, (*where, key)))}"


def _op_swap(tree: dict, rng: random.Random) -> str:
    a, b = rng.sample(SECTIONS, 2)
    tree[a], tree[b] = tree.get(b, {}), tree.get(a, {})
    return f"swap sections {a}<->{b}"


def _op_replace_section(tree: dict, rng: random.Random) -> str:
    section = rng.choice(SECTIONS)
    tree[section] = random_value(rng)
    return f"replace section {section}={_short(tree[section])}"


def _op_model_kind(tree: dict, rng: random.Random) -> str:
    """Switch the model kind, keeping the old keys (refused) or making it consistent."""
    kind = rng.choice(["mlp", "cnn", "timm", "torchvision"])
    model = tree.get("model") if isinstance(tree.get("model"), dict) else {}
    if rng.random() < 0.7:
        model = {"kind": kind}
        if kind == "mlp":
            model["hidden"] = _widths(rng) or [4]
        elif kind == "cnn":
            model["stages"] = _stages(rng)
        else:
            model["name"] = rng.choice(["resnet18", "mobilenet_v3_small"])
    else:
        model = {**model, "kind": kind}
    tree["model"] = model
    return f"model={_short(model)}"


DATA_CHOICES: list[dict[str, Any]] = [
    {"source": "sklearn", "name": "iris"}, {"source": "sklearn", "name": "wine"},
    {"source": "sklearn", "name": "digits"}, {"source": "sklearn", "name": "digits",
                                              "as_image": True},
    {"source": "sklearn", "name": "diabetes"}, {"source": "sklearn", "name": "breast_cancer"},
    {"source": "sklearn", "name": "iris", "as_image": True},
    {"source": "synthetic", "n_samples": 60}, {"source": "synthetic", "n_samples": 10,
                                               "in_features": 3, "out_features": 2},
    {"source": "synthetic", "n_samples": 10**7, "in_features": 10**6},
    {"source": "synthetic", "n_samples": 10**7, "in_features": 1000},
    {"source": "csv", "path": "table.csv", "target": "y"},
    {"source": "csv", "path": "reg.csv", "target": "y", "task": "regression"},
    {"source": "csv", "path": "table.csv", "target": "a", "task": "classification"},
    {"source": "csv", "path": "missing.csv", "target": "y"},
    {"source": "torchvision", "name": "MNIST", "root": "data", "limit": 100},
    {"source": "torchvision", "name": "CIFAR10", "root": "."},
]


def _op_data_source(tree: dict, rng: random.Random) -> str:
    data = copy.deepcopy(rng.choice(DATA_CHOICES))
    old = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    if rng.random() < 0.3:  # keep the old keys that do not belong to the new source
        data = {**old, **data}
    tree["data"] = data
    return f"data={_short(data)}"


OPS = [(_op_targeted, 45), (_op_random, 15), (_op_delete, 10), (_op_unknown, 4), (_op_swap, 3),
       (_op_replace_section, 3), (_op_model_kind, 8), (_op_data_source, 12)]


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=1)
def _leaf_paths() -> list[tuple[str, ...]]:
    return _all_leaf_paths()


@functools.cache
def _bases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, the file as written, the file with every default filled in)."""
    return [(f.stem, yaml.safe_load(f.read_text()), recipe_to_dict(load_recipe(f)))
            for f in BASE_FILES]


# ----------------------------------------------------------------------------- YAML attacks
def _bomb(rng: random.Random) -> str:
    levels, fan = rng.randint(1, 9), rng.randint(2, 10)
    parts = ["&b0 [" + ", ".join(["1"] * fan) + "]"]
    parts += [f"&b{i} [" + ", ".join([f"*b{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


MARK_VALUES: list[Callable[[random.Random], str]] = [
    _bomb, _bomb, _bomb,
    lambda r: "&s [1, *s]", lambda r: "&s {a: *s}", lambda r: "*undefined",
    lambda r: "[" * (n := r.choice([33, 200, 5000, 50_000])) + "]" * n,
    lambda r: "{a: " * (n := r.choice([33, 300, 5000])) + "1" + "}" * n,
    lambda r: "!!python/object/apply:os.system ['echo pwned']",
    lambda r: r.choice(["!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14",
                        "!!omap [a: 1, b: 2]", "!!str 4", "!!int '12'", "!!float 1e999",
                        "!!int 0x1f", "2001-13-45", "1:30", "0o17", "0b101", "0x1f", ".NaN",
                        "-.inf", "1" + "0" * 5000, "1" + "0" * 400 + ".0", "'\\x00'",
                        '"\\x00\\x07"', "!!null ''", "{<<: [1, 2]}", "{<<: {a: 1}, b: 2}"]),
]


def _attack(tree: Any, rng: random.Random) -> tuple[str, bytes]:
    """A YAML-level attack on the (possibly mutated) tree: (description, file bytes)."""
    kind = rng.choice(["mark", "mark", "mark", "choices", "choices", "duplicate", "duplicate",
                       "bytes", "nul", "control", "truncate", "oversize", "tabs", "documents",
                       "bom_crlf", "merge", "utf16", "flip"])
    tree = copy.deepcopy(tree) if isinstance(tree, dict) else {"seed": 0}
    if kind in ("mark", "choices", "merge"):
        if kind == "merge":
            path = ("train",)
            raw = rng.choice(["{<<: {epochs: 1, batch_size: 8}, lr: 0.01}", "{<<: [1, 2]}",
                              "{<<: *nowhere}", "{<<: [{epochs: 1}, {lr: 0.5}], epochs: 2}"])
        elif kind == "choices":
            path: tuple[Any, ...] = ("search", "space", "bomb", "choices")
            _set(tree, ("search", "space", "bomb", "type"), "categorical")
        else:
            path = rng.choice(_paths(tree) or [("seed",)])
        _set(tree, path, MARK)
        raw = raw if kind == "merge" else rng.choice(MARK_VALUES)(rng)
        text = _dump(tree).replace(MARK, raw, 1)
        return f"{kind} {'.'.join(map(str, path))}: {_short(raw)}", text.encode()
    text = _dump(tree)
    lines = text.splitlines(keepends=True)
    if kind == "duplicate":
        keyed = [i for i, line in enumerate(lines) if ":" in line and not line.startswith("-")]
        i = rng.choice(keyed) if keyed else 0
        head = lines[i].split(":", 1)[0]
        extra = head + ": " + rng.choice(["1", "100000", "[4]", "{}", "null"]) + "\n"
        lines.insert(i + rng.choice([0, 1]), extra)
        return f"duplicate {head.strip()!r}", "".join(lines).encode()
    data = text.encode()
    where = rng.randint(0, len(data))
    if kind == "bytes":
        junk = rng.choice([b"\xff", b"\xfe\xff", b"\xe9", b"\xc3\x28", b"\x80", b"# caf\xe9\n"])
        return f"bytes {junk!r} at {where}", data[:where] + junk + data[where:]
    if kind == "nul":
        return f"NUL at {where}", data[:where] + b"\x00" + data[where:]
    if kind == "control":
        junk = rng.choice([b"\x07", b"\x1b[31m", b"\x7f", b"\xc2\x85", b"\xe2\x80\xa8"])
        return f"control {junk!r} at {where}", data[:where] + junk + data[where:]
    if kind == "truncate":
        return f"truncated at {where}", data[:where]
    if kind == "oversize":
        return "oversize", data + b"#" + b"x" * (1 << 20) + b"\n"
    if kind == "tabs":
        return "tab indentation", data.replace(b"\n  ", b"\n\t", 1)
    if kind == "documents":
        return "two documents", data + b"\n---\nseed: 1\n"
    if kind == "bom_crlf":
        return "BOM and CRLF", b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")
    if kind == "utf16":
        return "UTF-16", text.encode("utf-16")
    flipped = bytearray(data or b" ")
    flipped[min(where, len(flipped) - 1)] ^= 1 << rng.randint(0, 7)
    return f"bit flip at {where}", bytes(flipped)


def _dump(tree: Any) -> str:
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10_000)


@dataclass(frozen=True)
class Mutant:
    index: int
    description: str
    data: bytes


def mutant(index: int) -> Mutant:
    """Mutant `index`, reproducible on its own."""
    rng = random.Random(f"{SEED}:{index}")
    name, written, resolved = rng.choice(_bases())
    tree = copy.deepcopy(written if rng.random() < 0.5 else resolved)
    steps = [name]
    if rng.random() < 0.01:
        tree = random_value(rng)
        steps.append(f"document={_short(tree)}")
    ops, weights = zip(*OPS, strict=True)
    n_ops = rng.choices([0, 1, 2, 3, 4], [8, 46, 26, 12, 8])[0]
    for op in rng.choices(ops, weights, k=n_ops):
        if isinstance(tree, dict):
            steps.append(op(tree, rng))
    if rng.random() < 0.17:
        what, data = _attack(tree, rng)
        steps.append(what)
    else:
        data = _dump(tree).encode()
    return Mutant(index, "; ".join(steps), data)


# -------------------------------------------------------------------------------- the checks
class Failure(AssertionError):
    pass


def _fail(m: Mutant, stage: str, error: BaseException) -> Failure:
    tail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
    text = m.data[:300].decode("utf-8", "replace")
    return Failure(f"mutant {m.index} ({m.description}) failed at {stage} with "
                   f"{type(error).__name__}: {str(error)[:300]}\n{tail}\n--- recipe ---\n{text}")


def _check_message(m: Mutant, stage: str, error: UserError) -> None:
    message = str(error)
    if "\n" in message or len(message) > MAX_MESSAGE or not message:
        raise _fail(m, f"{stage} (a refusal must be one short line)", error)


def _refused(m: Mutant, stage: str, call: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, None) if `call` raised a UserError, (False, its result) otherwise."""
    try:
        return False, call()
    except UserError as error:
        _check_message(m, stage, error)
        return True, None
    except Failure:
        raise
    except BaseException as error:  # noqa: BLE001 - anything else is the bug under test
        if isinstance(error, KeyboardInterrupt):
            raise
        raise _fail(m, stage, error) from None


@dataclass
class Planned:
    mutant: Mutant
    recipe: Recipe
    splits: Splits


def _data_key(recipe: Recipe) -> str:
    return f"{recipe.seed}:{recipe.data.model_dump_json()}"


def plan_all(folder: Path, count: int, stats: Counter[str]) -> list[Planned]:
    """Write, load and plan `count` mutants in `folder`; the native ones that plan are returned."""
    _write_csvs(folder)
    data_cache: dict[str, tuple[bool, Any]] = {}
    planned: list[Planned] = []
    for index in range(count):
        m = mutant(index)
        path = folder / f"m{index:04d}.yaml"
        path.write_bytes(m.data)
        stats["mutants"] += 1
        refused, recipe = _refused(m, "load_recipe", lambda p=path: load_recipe(p))
        if refused:
            stats["refused by load_recipe"] += 1
            continue
        if not isinstance(recipe, Recipe):
            raise _fail(m, "load_recipe", TypeError(f"returned {type(recipe).__name__}"))
        stats["accepted"] += 1
        if not isinstance(recipe.model, NATIVE):
            stats["accepted, foreign model (not trained here)"] += 1
            continue
        if isinstance(recipe.data, TorchvisionData) and recipe.data.download:
            stats["accepted, skipped: would download"] += 1
            continue
        key = _data_key(recipe)
        if key not in data_cache:
            # as the pipelines do: the size check, then the data
            data_cache[key] = _refused(m, "check_data/load_data", lambda r=recipe: (
                check_data(r.data), load_data(r.data, r.seed))[1])
        refused, splits = data_cache[key]
        if refused:
            stats["data refused"] += 1
            continue
        refused, _ = _refused(m, "plan_network", lambda r=recipe, s=splits: plan_network(r, s))
        if refused:
            stats["refused by plan_network"] += 1
            continue
        stats["planned"] += 1
        planned.append(Planned(m, recipe, splits))
    return planned


def _write_csvs(folder: Path) -> None:
    rows = ["a,b,c,y"] + [f"{i % 7},{(i * 3) % 5},{i / 10},{i % 3}" for i in range(40)]
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    reg = ["a,b,y"] + [f"{i},{i % 4},{i * 0.5 + 1}" for i in range(30)]
    (folder / "reg.csv").write_text("\n".join(reg) + "\n")
    (folder / "latin1.csv").write_bytes(b"a,b,y\n" + "caf\xe9,1,0\n".encode("latin-1"))
    (folder / "empty.csv").write_text("")


def train_one_step(p: Planned) -> str:
    """One optimizer step and one growth check; 'ok' or 'refused'."""
    def step() -> None:
        recipe = derive(p.recipe, {"train.epochs": 1})
        trainer = Trainer(recipe, p.splits, torch.device("cpu"))
        n = len(p.splits.x_train)
        trainer.train_step(torch.arange(min(recipe.train.batch_size, n)))
        trainer.maybe_grow()

    refused, _ = _refused(p.mutant, "train_step/maybe_grow", step)
    return "refused" if refused else "ok"


# --------------------------------------------------------------------------------- the tests
@pytest.fixture
def fixed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, MEMORY_BYTES)


@pytest.mark.usefixtures("fixed_memory")
def test_mutated_recipes_are_refused_or_run(tmp_path: Path, capsys: pytest.CaptureFixture):
    started = time.perf_counter()
    stats: Counter[str] = Counter()
    planned = plan_all(tmp_path, N_MUTANTS, stats)
    sample = random.Random(SEED).sample(planned, min(N_TRAINED, len(planned)))
    for p in sample:
        stats[f"one step: {train_one_step(p)}"] += 1
    with capsys.disabled():
        print(f"\nfuzz: {dict(stats)} in {time.perf_counter() - started:.1f} s")
    assert stats["mutants"] >= 1_000
    # The pools are tuned so that both outcomes are common; a change that refuses (or accepts)
    # everything would make this test vacuous.
    assert 0.15 * N_MUTANTS < stats["accepted"] < 0.85 * N_MUTANTS, stats
    assert stats["planned"] >= 100, stats
    assert stats["one step: ok"] >= N_TRAINED // 2, stats


def _through_the_cli(path: Path, out: Path) -> tuple[str, Any]:
    """`netsize grow` on a mutant for one epoch: (outcome, click result)."""
    try:
        recipe = load_recipe(path)
    except UserError:
        recipe = None
    if recipe is not None and isinstance(recipe.data, TorchvisionData) and recipe.data.download:
        return "skipped", None
    args = ["grow", str(path), "--out", str(out), "--device", "cpu", "--set", "train.epochs=1"]
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    if result.exit_code == 0 and (out / "checkpoints" / "final").is_dir():
        return "exit 0", result
    one_error = sum(line.startswith("error:") for line in lines) == 1 and lines[-1].startswith(
        "error:")
    if result.exit_code == 2 and one_error and "Traceback" not in result.output:
        return "exit 2", result
    return "bad", result


@pytest.mark.usefixtures("fixed_memory")
def test_mutants_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    """A sample through `netsize grow`: exit 0 with a run, or exit 2 with one error line."""
    _write_csvs(tmp_path)
    stats: Counter[str] = Counter()
    for index in random.Random(SEED + 1).sample(range(N_MUTANTS), N_CLI):
        m = mutant(index)
        path = tmp_path / f"m{index:04d}.yaml"
        path.write_bytes(m.data)
        outcome, result = _through_the_cli(path, tmp_path / f"out{index:04d}")
        stats[outcome] += 1
        assert outcome != "bad", (f"mutant {index} ({m.description}): exit code "
                                  f"{result.exit_code}\n{result.output[-2000:]}")
    with capsys.disabled():
        print(f"\nfuzz (cli): {dict(stats)}")
    assert stats["exit 0"] >= 3 and stats["exit 2"] >= 10, stats


def _small(p: Planned) -> Recipe:
    """The mutant's recipe for one epoch, on a small data set where the recipe says how big."""
    changes: dict[str, Any] = {"train.epochs": 1}
    data = p.recipe.data
    if getattr(data, "n_samples", 0) > 200:
        changes["data.n_samples"] = 200
    if isinstance(data, TorchvisionData):
        changes["data.limit"] = min(data.limit or 500, 500)
    return derive(p.recipe, changes)


@pytest.mark.slow
@pytest.mark.usefixtures("fixed_memory")
def test_every_accepted_mutant_trains_an_epoch(tmp_path: Path, capsys: pytest.CaptureFixture):
    started = time.perf_counter()
    stats: Counter[str] = Counter()
    planned = plan_all(tmp_path, N_MUTANTS, stats)
    for p in planned:
        run_dir = tmp_path / f"run{p.mutant.index:04d}"

        def run(p: Planned = p, run_dir: Path = run_dir) -> Any:
            return run_grow(_small(p), run_dir, name=f"m{p.mutant.index}")

        refused, result = _refused(p.mutant, "run_grow", run)
        stats["run_grow refused" if refused else "run_grow ok"] += 1
        if not refused:
            assert (run_dir / "checkpoints" / "final" / "spec.json").is_file()
            assert result.summary.history, p.mutant.description
    with capsys.disabled():
        print(f"\nfuzz (slow): {dict(stats)} in {time.perf_counter() - started:.1f} s")
    assert stats["run_grow ok"] >= 100, stats
