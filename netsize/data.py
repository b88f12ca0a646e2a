"""Datasets as whole tensors: load, split (seeded, stratified), standardise, augment.

Everything ends up in a `Splits`: float32 inputs, int64 class labels (N,) or float32 regression
targets (N, T). The trainer draws batches by index, so there is no DataLoader here.

Image files (CIFAR's pickled batches, read safely; MNIST) are in `netsize.vision_files`, CSV
files in `netsize.csv_file`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from netsize.config import MAX_EXAMPLES, MAX_FEATURES, MAX_WIDTH, Strict
from netsize.csv_file import load_csv
from netsize.errors import UserError
from netsize.vision_files import CIFAR, load_cifar, load_mnist

Task = Literal["classification", "regression"]


# ----------------------------------------------------------------------------------- config
class AugmentConfig(Strict):
    crop_padding: int = Field(0, ge=0, le=16)  # pixels of zero padding for the random crop
    flip: bool = False  # random horizontal flip


class _DataCommon(Strict):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    augment: AugmentConfig = AugmentConfig()
    standardize: bool = True


SklearnName = Literal["digits", "iris", "wine", "breast_cancer", "diabetes"]


class SklearnData(_DataCommon):
    source: Literal["sklearn"]
    name: SklearnName
    as_image: bool = False  # digits only: 1x8x8 images for a CNN instead of 64 features

    @model_validator(mode="after")
    def _image_only_for_digits(self) -> SklearnData:
        if self.as_image and self.name != "digits":
            raise ValueError("as_image is only available for name: digits")
        return self


class TorchvisionData(_DataCommon):
    source: Literal["torchvision"]
    name: Literal["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST"]
    root: str = "data"
    download: bool = False
    # use only the first N training images (quick runs); the test split stays whole
    limit: int | None = Field(None, gt=0, le=MAX_EXAMPLES)


class CsvData(_DataCommon):
    source: Literal["csv"]
    path: str
    target: str
    task: Literal["auto", "classification", "regression"] = "auto"


class SyntheticData(_DataCommon):
    """GradMax's teacher-student task: a random MLP teacher labels Gaussian inputs (MSE)."""

    source: Literal["synthetic"]
    name: Literal["teacher_student"] = "teacher_student"
    n_samples: int = Field(1000, ge=10, le=MAX_EXAMPLES)
    in_features: int = Field(10, ge=1, le=MAX_FEATURES)
    teacher_hidden: int = Field(10, ge=1, le=MAX_WIDTH)
    out_features: int = Field(10, ge=1, le=MAX_WIDTH)
    noise: float = Field(0.0, ge=0.0, le=1e6)
    # teacher weights: GradMax's paper draws them from U[-1, 1]; normal: N(0, 1/fan_in)
    teacher_init: Literal["uniform", "normal"] = "normal"


DataConfig = Annotated[
    SklearnData | TorchvisionData | CsvData | SyntheticData, Field(discriminator="source")
]


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    input_shape: tuple[int, ...]  # per example: (64,) for features, (C, H, W) for images
    n_outputs: int  # number of classes, or number of regression targets

    def to(self, device: torch.device | str) -> Splits:
        names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        return replace(self, **{name: getattr(self, name).to(device) for name in names})

    def is_image(self) -> bool:
        return len(self.input_shape) == 3


DataCfg = SklearnData | TorchvisionData | CsvData | SyntheticData


def load_data(cfg: DataCfg, seed: int) -> Splits:
    """Load the dataset named by `cfg`, split it with `seed` and standardise it (train stats)."""
    if isinstance(cfg, SklearnData):
        x, y, task = _load_sklearn(cfg)
        splits = _split_and_build(x, y, task, cfg.val_fraction, cfg.test_fraction, seed)
    elif isinstance(cfg, CsvData):
        x, y, task = load_csv(cfg)
        splits = _split_and_build(x, y, task, cfg.val_fraction, cfg.test_fraction, seed)
    elif isinstance(cfg, TorchvisionData):
        splits = _load_torchvision(cfg, seed)
    elif isinstance(cfg, SyntheticData):
        # Already standard: x ~ N(0, 1) by construction, and the targets stay in the teacher's
        # units so the MSE is comparable with GradMax's teacher-student numbers.
        return _load_synthetic(cfg, seed)
    else:
        raise TypeError(f"unknown data config {type(cfg).__name__}")
    augment = cfg.augment.crop_padding > 0 or cfg.augment.flip
    if augment and not splits.is_image():
        raise UserError("data.augment (crop_padding/flip) needs image data; remove data.augment "
                        "or use image inputs (e.g. data.as_image: true for digits).")
    return _standardize(splits) if cfg.standardize else splits


# -------------------------------------------------------------------------------------- splitting
def _split_indices(
    y: torch.Tensor | None, n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded (train, val, test) index split; stratified per class when labels `y` are given.

    Every class keeps at least one training example; a split may still come out empty for a
    tiny data set (`_check_split_sizes` refuses that).
    """
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.arange(n)] if y is None else [torch.nonzero(y == c).flatten()
                                                  for c in torch.unique(y)]
    parts: list[list[torch.Tensor]] = [[], [], []]
    for idx in groups:
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val, n_test = _part_size(len(idx), val_fraction), _part_size(len(idx), test_fraction)
        while len(idx) and n_val + n_test >= len(idx):  # keep one training example
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
        parts[0].append(idx[n_val + n_test :])
    out = [torch.cat(p) if p else torch.zeros(0, dtype=torch.int64) for p in parts]
    # Shuffle within each split so it is not ordered by class.
    train, val, test = (p[torch.randperm(len(p), generator=gen)] for p in out)
    return train, val, test


def _part_size(count: int, fraction: float) -> int:
    # At least one example per part when the group can afford it (>= 3: train, val and test).
    if fraction <= 0.0:
        return 0
    size = int(round(count * fraction))
    return max(size, 1) if count >= 3 else size


def _check_split_sizes(y: torch.Tensor | None, train: torch.Tensor, val: torch.Tensor,
                       test: torch.Tensor | None, val_frac: float, test_frac: float) -> None:
    """Refuse splits a run cannot use: an empty validation or test split, or < 2 to train on.

    `test` is None when the test set is not carved out here (torchvision's official test set).
    """
    sizes = [len(train), len(val)] + ([] if test is None else [len(test)])
    if len(train) >= 2 and all(sizes[1:]):
        return
    names = "data.val_fraction" + ("" if test is None else " and data.test_fraction")
    fractions = f"{val_frac:g}" + ("" if test is None else f" and {test_frac:g}")
    counts = f"{len(train)} training and {len(val)} validation" + (
        "" if test is None else f" and {len(test)} test")
    smallest = ""
    if y is not None and len(y):
        per_class = torch.unique(y, return_counts=True)[1]
        smallest = (f" (split per class, and the smallest of {len(per_class)} classes has "
                    f"{int(per_class.min())} examples)")
    raise UserError(f"{names} ({fractions}) leave {counts} examples out of {sum(sizes)}"
                    f"{smallest}; every split needs at least one example and training at least "
                    f"two: use a larger data set or change {names}.")


def _split_and_build(
    x: torch.Tensor, y: torch.Tensor, task: Task, val_frac: float, test_frac: float, seed: int
) -> Splits:
    stratify = y if task == "classification" else None
    train, val, test = _split_indices(stratify, len(x), val_frac, test_frac, seed)
    _check_split_sizes(stratify, train, val, test, val_frac, test_frac)
    return Splits(x[train], y[train], x[val], y[val], x[test], y[test], task,
                  tuple(x.shape[1:]), _n_outputs(y, task))


def _n_outputs(y: torch.Tensor, task: Task) -> int:
    return int(y.max().item()) + 1 if task == "classification" else int(y.shape[1])


# -------------------------------------------------------------------------------- standardisation
def _standardize(s: Splits) -> Splits:
    dims = (0, 2, 3) if s.is_image() else (0,)  # images: per channel; vectors: per feature
    mean, std = _stats(s.x_train, dims)
    fields: dict[str, Any] = {f"x_{k}": (getattr(s, f"x_{k}") - mean) / std
                              for k in ("train", "val", "test")}
    if s.task == "regression":  # R^2 is unchanged by an affine map of the targets
        y_mean, y_std = _stats(s.y_train, (0,))
        fields.update({f"y_{k}": (getattr(s, f"y_{k}") - y_mean) / y_std
                       for k in ("train", "val", "test")})
    return replace(s, **fields)


def _stats(t: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    mean = t.mean(dim=dims, keepdim=True)
    std = t.std(dim=dims, keepdim=True, correction=0)
    return mean, torch.where(std > 1e-12, std, torch.ones_like(std))  # constant feature: std 1


# ---------------------------------------------------------------------------------------- sklearn
def _load_sklearn(cfg: SklearnData) -> tuple[torch.Tensor, torch.Tensor, Task]:
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "iris": datasets.load_iris,
               "wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer,
               "diabetes": datasets.load_diabetes}
    bunch = loaders[cfg.name]()
    x = torch.as_tensor(np.asarray(bunch.data), dtype=torch.float32)  # (N, F)
    if cfg.name == "diabetes":
        y = torch.as_tensor(np.asarray(bunch.target), dtype=torch.float32).reshape(-1, 1)
        return x, y, "regression"
    if cfg.name == "digits":
        x = x / 16.0  # pixel intensities 0..16 -> [0, 1]
        if cfg.as_image:
            x = x.reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    return x, torch.as_tensor(np.asarray(bunch.target), dtype=torch.int64), "classification"


# ------------------------------------------------------------------------------------ torchvision
def _load_torchvision(cfg: TorchvisionData, seed: int) -> Splits:
    if cfg.name in CIFAR:
        (x_tr, y_tr), (x_te, y_te) = load_cifar(cfg)
    else:
        (x_tr, y_tr), (x_te, y_te) = load_mnist(cfg, True), load_mnist(cfg, False)
    if cfg.limit is not None:  # the training images only: the official test set stays whole
        x_tr, y_tr = x_tr[: cfg.limit], y_tr[: cfg.limit]
    # The official test set is the test split; validation is carved out of the training set.
    train, val, _ = _split_indices(y_tr, len(x_tr), cfg.val_fraction, 0.0, seed)
    _check_split_sizes(y_tr, train, val, None, cfg.val_fraction, 0.0)
    n_classes = int(max(y_tr.max().item(), y_te.max().item())) + 1
    return Splits(x_tr[train], y_tr[train], x_tr[val], y_tr[val], x_te, y_te, "classification",
                  tuple(x_tr.shape[1:]), n_classes)


# -------------------------------------------------------------------------------------- synthetic
def _load_synthetic(cfg: SyntheticData, seed: int) -> Splits:
    """GradMax teacher-student: y = relu(x W1^T) W2^T + noise, no biases; W ~ U[-1, 1]
    (teacher_init uniform, GradMax's paper) or N(0, 1/fan_in) (normal)."""
    gen = torch.Generator().manual_seed(seed)
    n, d_in, d_h, d_out = cfg.n_samples, cfg.in_features, cfg.teacher_hidden, cfg.out_features
    x = torch.randn(n, d_in, generator=gen)  # (N, in)
    w1 = _teacher_weights(d_h, d_in, cfg.teacher_init, gen)  # (hidden, in)
    w2 = _teacher_weights(d_out, d_h, cfg.teacher_init, gen)  # (out, hidden)
    y = torch.relu(x @ w1.T) @ w2.T  # (N, out)
    y = y + cfg.noise * torch.randn(n, d_out, generator=gen)
    return _split_and_build(x, y, "regression", cfg.val_fraction, cfg.test_fraction, seed)


def _teacher_weights(rows: int, cols: int, init: str, gen: torch.Generator) -> torch.Tensor:
    if init == "uniform":
        return torch.rand(rows, cols, generator=gen) * 2 - 1
    return torch.randn(rows, cols, generator=gen) / cols**0.5


# ---------------------------------------------------------------------------------- augmentation
def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding) then random horizontal flip of a batch (N, C, H, W), batched."""
    if cfg.crop_padding == 0 and not cfg.flip:
        return x
    if x.dim() != 4:
        raise ValueError(f"augment_batch needs images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    if cfg.crop_padding > 0:
        p = cfg.crop_padding
        padded = F.pad(x, (p, p, p, p))  # (N, C, H + 2p, W + 2p)
        offsets = _draw(lambda d: torch.randint(0, 2 * p + 1, (2, n), generator=generator,
                                                device=d), generator, x.device)  # (2, N)
        rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (N, H)
        cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (N, W)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]  # (N, C, H, W)
    if cfg.flip:
        flip = _draw(lambda d: torch.rand(n, generator=generator, device=d) < 0.5,
                     generator, x.device)  # (N,)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def _draw(sample: Any, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device (CPU or the accelerator), then move to the data.
    return sample(generator.device).to(device)
