"""netsize.data: loading, seeded stratified splits, standardisation, safe CIFAR reading, augment."""

from __future__ import annotations

import builtins
import inspect
import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from netsize.data import Splits, augment_batch, load_data
from netsize.errors import UserError
from netsize.recipe import AugmentConfig, CsvData, SklearnData, SyntheticData, TorchvisionData


def digits(as_image: bool = False, standardize: bool = True) -> SklearnData:
    return SklearnData(source="sklearn", name="digits", as_image=as_image, standardize=standardize)


def rows(s: Splits) -> Counter[tuple[float, ...]]:
    x = torch.cat([s.x_train, s.x_val, s.x_test]).flatten(1)
    y = torch.cat([s.y_train, s.y_val, s.y_test]).float()[:, None]
    return Counter(map(tuple, torch.cat([x, y], 1).tolist()))


# ---------------------------------------------------------------------------------------- sklearn
@pytest.mark.parametrize("as_image,shape", [(True, (1, 8, 8)), (False, (64,))])
def test_digits_shapes_sizes_and_partition(as_image: bool, shape: tuple[int, ...]) -> None:
    s = load_data(digits(as_image, standardize=False), seed=0)
    assert s.input_shape == shape and s.is_image() == as_image
    assert s.task == "classification" and s.n_outputs == 10
    assert tuple(s.x_train.shape[1:]) == shape and s.x_train.dtype == torch.float32
    assert s.y_train.dtype == torch.int64 and s.y_train.dim() == 1
    sizes = [len(s.y_train), len(s.y_val), len(s.y_test)]
    assert sum(sizes) == 1797 and all(len(x) == n for x, n in
                                      zip([s.x_train, s.x_val, s.x_test], sizes, strict=True))
    assert abs(sizes[1] - 0.15 * 1797) <= 10 and abs(sizes[2] - 0.15 * 1797) <= 10
    # The three splits together are exactly the dataset (each example once: no overlap, no loss).
    from sklearn.datasets import load_digits

    raw = load_digits()
    full = torch.cat([torch.tensor(raw.data / 16.0, dtype=torch.float32),
                      torch.tensor(raw.target, dtype=torch.float32)[:, None]], 1)
    assert rows(s) == Counter(map(tuple, full.tolist()))


def test_digits_standardised_with_train_statistics() -> None:
    raw = load_data(digits(standardize=False), seed=3)
    s = load_data(digits(), seed=3)
    assert torch.equal(raw.y_train, s.y_train)  # same split
    varying = raw.x_train.std(0) > 0
    assert s.x_train.mean(0).abs().max() < 1e-5
    assert torch.allclose(s.x_train.std(0, correction=0)[varying], torch.ones(int(varying.sum())),
                          atol=1e-4)
    mean, std = raw.x_train.mean(0), raw.x_train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    assert torch.allclose(s.x_val, (raw.x_val - mean) / std, atol=1e-5)
    assert torch.allclose(s.x_test, (raw.x_test - mean) / std, atol=1e-5)
    assert s.x_val.mean(0).abs().max() > 1e-3  # val is not re-standardised on its own stats


def test_digits_image_standardised_per_channel() -> None:
    s = load_data(digits(as_image=True), seed=0)
    assert abs(s.x_train.mean().item()) < 1e-5 and abs(s.x_train.std(correction=0) - 1) < 1e-4


def test_split_is_deterministic_per_seed() -> None:
    a, b, c = (load_data(digits(), seed) for seed in (1, 1, 2))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.y_train, c.y_train)
    assert not torch.equal(a.x_test, c.x_test)


def test_split_is_stratified() -> None:
    s = load_data(digits(), seed=0)
    total = Counter(torch.cat([s.y_train, s.y_val, s.y_test]).tolist())
    for y, fraction in ((s.y_val, 0.15), (s.y_test, 0.15)):
        counts = Counter(y.tolist())
        assert set(counts) == set(range(10))
        assert all(abs(counts[k] - fraction * total[k]) <= 1 for k in range(10))
    assert set(s.y_train.tolist()) == set(range(10))


def test_diabetes_is_regression_with_standardised_targets() -> None:
    s = load_data(SklearnData(source="sklearn", name="diabetes"), seed=0)
    assert s.task == "regression" and s.n_outputs == 1
    assert s.y_train.dtype == torch.float32 and s.y_train.shape == (len(s.x_train), 1)
    assert abs(s.y_train.mean().item()) < 1e-5 and abs(s.y_train.std(correction=0) - 1) < 1e-4
    assert sum(len(y) for y in (s.y_train, s.y_val, s.y_test)) == 442


@pytest.mark.parametrize("name,classes,features", [("iris", 3, 4), ("wine", 3, 13),
                                                   ("breast_cancer", 2, 30)])
def test_small_sklearn_classification(name: str, classes: int, features: int) -> None:
    s = load_data(SklearnData(source="sklearn", name=name), seed=0)  # type: ignore[arg-type]
    assert s.n_outputs == classes and s.input_shape == (features,)
    assert set(s.y_test.tolist()) == set(range(classes))


def test_splits_to_returns_new_object() -> None:
    s = load_data(SklearnData(source="sklearn", name="iris"), seed=0)
    moved = s.to("cpu")
    assert moved is not s and torch.equal(moved.x_train, s.x_train) and moved.task == s.task


def test_augment_on_feature_data_is_a_user_error() -> None:
    cfg = SklearnData(source="sklearn", name="iris", augment=AugmentConfig(flip=True))
    with pytest.raises(UserError, match="augment"):
        load_data(cfg, seed=0)


# ------------------------------------------------------------------------------------------ CIFAR
def write_cifar10(root: Path, per_batch: int = 4, protocol: int = 2) -> dict[str, np.ndarray]:
    """Small files in the real CIFAR-10 python format; test image 0 has one bright pixel."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        if name == "test_batch":
            data[0] = 0
            data[0, 2 * 1024 + 5 * 32 + 7] = 255  # channel 2, row 5, column 7
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(base / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels,
                         b"filenames": [b"a.png"] * per_batch}, f, protocol=protocol)
        written[name] = data
        written[name + "_labels"] = np.array(labels)
    return written


def cifar(root: Path, **kwargs: object) -> TorchvisionData:
    return TorchvisionData(source="torchvision", name="CIFAR10", root=str(root), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar10_reader(tmp_path: Path, protocol: int) -> None:
    written = write_cifar10(tmp_path, protocol=protocol)
    s = load_data(cifar(tmp_path, standardize=False), seed=0)
    assert s.input_shape == (3, 32, 32) and s.n_outputs == 10 and s.task == "classification"
    assert len(s.x_train) + len(s.x_val) == 20 and len(s.x_test) == 4 and len(s.x_val) >= 1
    assert torch.equal(s.y_test, torch.tensor(written["test_batch_labels"]))
    expected = Counter(np.concatenate([written[f"data_batch_{i}_labels"] for i in range(1, 6)]))
    assert Counter(torch.cat([s.y_train, s.y_val]).tolist()) == expected
    image = s.x_test[0]
    assert image[2, 5, 7] == 1.0 and image.sum() == 1.0  # pixel order: (C, H, W)
    x1 = torch.tensor(written["test_batch"][1].reshape(3, 32, 32), dtype=torch.float32) / 255
    assert torch.allclose(s.x_test[1], x1)


def test_cifar10_standardised_per_channel_and_limit(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    s = load_data(cifar(tmp_path, limit=7), seed=0)
    assert len(s.x_train) + len(s.x_val) == 7 and len(s.x_test) == 4
    assert s.x_train.mean((0, 2, 3)).abs().max() < 1e-5
    assert (s.x_train.std((0, 2, 3), correction=0) - 1).abs().max() < 1e-4


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        data = np.zeros((n, 3072), dtype=np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": [99] * n, b"coarse_labels": [1] * n}, f)
    cfg = TorchvisionData(source="torchvision", name="CIFAR100", root=str(tmp_path))
    s = load_data(cfg, seed=0)
    assert s.n_outputs == 100 and s.y_test.tolist() == [99, 99, 99]


class _Payload:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.func, (self.arg,)


@pytest.mark.parametrize("kind", ["system", "eval"])
def test_malicious_cifar_pickle_is_refused(tmp_path: Path, kind: str) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = (_Payload(os.system, f"touch '{marker}'") if kind == "system"
               else _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"))
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": payload, b"labels": [0]}, f, protocol=2)
    with pytest.raises(UserError, match="refusing"):
        load_data(cifar(tmp_path), seed=0)
    assert not marker.exists()


def test_missing_cifar_files_name_root_and_download(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_data(cifar(tmp_path), seed=0)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "download" in message


def test_missing_mnist_files(tmp_path: Path) -> None:
    cfg = TorchvisionData(source="torchvision", name="MNIST", root=str(tmp_path))
    with pytest.raises(UserError) as info:
        load_data(cfg, seed=0)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value) and "download" in str(info.value)


# -------------------------------------------------------------------------------------------- csv
def write_csv(path: Path, header: list[str], body: list[list[object]]) -> Path:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *body]) + "\n")
    return path


def csv_cfg(path: Path, target: str = "y", **kwargs: object) -> CsvData:
    return CsvData(source="csv", path=str(path), target=target, **kwargs)  # type: ignore[arg-type]


def test_csv_string_labels_are_classes_in_sorted_order(tmp_path: Path) -> None:
    body = [[i, i * 2.5, ["cat", "ant", "bee"][i % 3]] for i in range(30)]
    path = write_csv(tmp_path / "d.csv", ["a", "b", "y"], body)
    s = load_data(csv_cfg(path, standardize=False), seed=0)
    assert s.task == "classification" and s.n_outputs == 3 and s.input_shape == (2,)
    x = torch.cat([s.x_train, s.x_val, s.x_test])
    y = torch.cat([s.y_train, s.y_val, s.y_test])
    for (a, _), label in zip(x.tolist(), y.tolist(), strict=True):
        assert label == {"ant": 0, "bee": 1, "cat": 2}[["cat", "ant", "bee"][int(a) % 3]]


def test_csv_regression_auto_detected(tmp_path: Path) -> None:
    body = [[i, 0.5 * i + 0.25] for i in range(40)]
    s = load_data(csv_cfg(write_csv(tmp_path / "r.csv", ["a", "y"], body)), seed=0)
    assert s.task == "regression" and s.y_train.shape == (len(s.x_train), 1)
    assert s.y_train.dtype == torch.float32


def test_csv_few_integers_are_classes(tmp_path: Path) -> None:
    body = [[i, i % 4 + 1] for i in range(40)]
    s = load_data(csv_cfg(write_csv(tmp_path / "c.csv", ["a", "y"], body)), seed=0)
    assert s.task == "classification" and s.n_outputs == 4


def test_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.csv"):
        load_data(csv_cfg(tmp_path / "nope.csv"), seed=0)
    path = write_csv(tmp_path / "d.csv", ["alpha", "beta", "y"], [[1, 2, 0], [3, 4, 1]] * 5)
    with pytest.raises(UserError, match="no column named 'label'"):
        load_data(csv_cfg(path, target="label"), seed=0)
    path = write_csv(tmp_path / "e.csv", ["alpha", "beta", "y"], [[1, 2, 0], [3, "oops", 1]])
    with pytest.raises(UserError, match=r"line 3, column 2"):
        load_data(csv_cfg(path), seed=0)


# -------------------------------------------------------------------------------------- synthetic
def test_synthetic_teacher_student() -> None:
    cfg = SyntheticData(source="synthetic", n_samples=1000, in_features=10, out_features=10)
    a, b, c = load_data(cfg, 0), load_data(cfg, 0), load_data(cfg, 1)
    assert a.task == "regression" and a.input_shape == (10,) and a.n_outputs == 10
    assert sum(len(x) for x in (a.x_train, a.x_val, a.x_test)) == 1000
    assert a.y_train.shape == (len(a.x_train), 10) and a.y_train.dtype == torch.float32
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.y_train.std() > 0.1  # the teacher is not degenerate


def test_teacher_weights_uniform_as_in_gradmax() -> None:
    """teacher_init uniform draws U[-1, 1] weights: with one input, one hidden unit and one
    output, y = relu(w1 x) w2 gives |y / x| = |w1 w2| <= 1 wherever y != 0, the same inputs
    as the normal teacher, and other targets."""
    common = dict(source="synthetic", n_samples=200, in_features=1, teacher_hidden=1,
                  out_features=1)
    uniform = load_data(SyntheticData(**common, teacher_init="uniform"), 0)
    normal = load_data(SyntheticData(**common), 0)
    x, y = uniform.x_train[:, 0], uniform.y_train[:, 0]
    assert torch.equal(x, normal.x_train[:, 0]) and not torch.equal(y, normal.y_train[:, 0])
    ratio = (y[y != 0] / x[y != 0]).abs()
    assert len(ratio) > 0 and torch.allclose(ratio, ratio[0]) and float(ratio[0]) <= 1.0


# ------------------------------------------------------------------------------------ augmentation
def images(n: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_identity_when_off() -> None:
    x = images()
    assert torch.equal(augment_batch(x, AugmentConfig(), gen(0)), x)


def test_augment_flip_only() -> None:
    x = images()
    out = augment_batch(x, AugmentConfig(flip=True), gen(0))
    assert out.shape == x.shape
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_augment_crop_is_window_of_padded_input() -> None:
    x, p = images(), 2
    out = augment_batch(x, AugmentConfig(crop_padding=p), gen(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(8):
        windows = [padded[i, :, a : a + 8, b : b + 8] for a in range(2 * p + 1)
                   for b in range(2 * p + 1)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augment_deterministic_and_batched() -> None:
    x, cfg = images(), AugmentConfig(crop_padding=4, flip=True)
    assert torch.equal(augment_batch(x, cfg, gen(5)), augment_batch(x, cfg, gen(5)))
    assert not torch.equal(augment_batch(x, cfg, gen(5)), augment_batch(x, cfg, gen(6)))
    assert "for " not in inspect.getsource(augment_batch)  # no Python loop over examples
