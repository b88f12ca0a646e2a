"""MNIST/FashionMNIST read straight from idx files (gzipped or plain) in any of the layouts."""

from __future__ import annotations

import gzip
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from netsize import vision_files
from netsize.errors import UserError
from netsize.vision_files import load_mnist

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 7, 3


def cfg(root: Path, name: str = "FashionMNIST", download: bool = False,
        limit: int | None = None) -> Any:
    # Duck-typed stand-in for recipe.TorchvisionData (only these attributes are read).
    return SimpleNamespace(name=name, root=str(root), download=download, limit=limit)


@pytest.fixture(autouse=True)
def _no_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The real Debian folder must not leak into tests about data.root.
    monkeypatch.setattr(vision_files, "DEBIAN_FASHION_MNIST_DIRS", [tmp_path / "no-debian"])


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    magic = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    return magic + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, np.uint8)


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_dataset(folder: Path, gz: bool) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    splits = {True: make_split(N_TRAIN, 1), False: make_split(N_TEST, 2)}
    for train, (images, labels) in splits.items():
        image_name, label_name = vision_files.MNIST_FILES[train]
        write_file(folder / image_name, idx_bytes(images), gz)
        write_file(folder / label_name, idx_bytes(labels), gz)
    return splits


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("layout", ["", "FashionMNIST", "FashionMNIST/raw"])
def test_round_trip_in_each_layout(tmp_path: Path, layout: str, gz: bool) -> None:
    splits = write_dataset(tmp_path / layout, gz)
    for train, (images, labels) in splits.items():
        x, y = load_mnist(cfg(tmp_path), train)
        assert x.dtype == torch.float32 and x.shape == (len(images), 1, 28, 28)
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert torch.equal(x, torch.from_numpy(images).unsqueeze(1).float() / 255.0)


def test_mnist_name_uses_its_own_folder(tmp_path: Path) -> None:
    write_dataset(tmp_path / "MNIST" / "raw", gz=False)
    x, _ = load_mnist(cfg(tmp_path, "MNIST"), False)
    assert x.shape == (N_TEST, 1, 28, 28)


def test_limit_cuts_training_images_only(tmp_path: Path) -> None:
    splits = write_dataset(tmp_path, gz=True)
    x, y = load_mnist(cfg(tmp_path, limit=4), True)
    assert x.shape[0] == 4 and y.tolist() == splits[True][1][:4].tolist()
    x, y = load_mnist(cfg(tmp_path, limit=2), False)
    assert x.shape[0] == N_TEST and len(y) == N_TEST


def corrupt(tmp_path: Path, which: int, data: bytes, gz: bool = False) -> Path:
    """A dataset in tmp_path whose training file `which` (0 images, 1 labels) holds `data`."""
    write_dataset(tmp_path, gz=False)
    target = tmp_path / vision_files.MNIST_FILES[True][which]
    target.unlink()
    return write_file(target, data, gz)


def assert_user_error_names(path: Path, root: Path) -> str:
    with pytest.raises(UserError) as info:
        load_mnist(cfg(root), True)
    message = str(info.value)
    assert str(path.absolute()) in message and "re-copy the file" in message
    return message


def test_truncated_gzip(tmp_path: Path) -> None:
    images, _ = make_split(N_TRAIN, 1)
    whole = gzip.compress(idx_bytes(images))
    write_dataset(tmp_path, gz=False)
    (tmp_path / vision_files.MNIST_FILES[True][0]).unlink()
    path = tmp_path / (vision_files.MNIST_FILES[True][0] + ".gz")
    path.write_bytes(whole[: len(whole) // 2])
    assert "gzip" in assert_user_error_names(path, tmp_path)


def test_wrong_magic(tmp_path: Path) -> None:
    images, _ = make_split(N_TRAIN, 1)
    path = corrupt(tmp_path, 0, idx_bytes(images, magic=bytes([0, 0, 0x0D, 3])), gz=True)
    assert "magic" in assert_user_error_names(path, tmp_path)


def test_byte_count_mismatch(tmp_path: Path) -> None:
    images, _ = make_split(N_TRAIN, 1)
    path = corrupt(tmp_path, 0, idx_bytes(images)[:-5])
    assert_user_error_names(path, tmp_path)


def test_label_out_of_range(tmp_path: Path) -> None:
    labels = np.array([0, 1, 11, 2, 3, 4, 5], dtype=np.uint8)
    path = corrupt(tmp_path, 1, idx_bytes(labels))
    assert "11" in assert_user_error_names(path, tmp_path)


def test_image_and_label_counts_differ(tmp_path: Path) -> None:
    labels = np.zeros(N_TRAIN - 1, dtype=np.uint8)
    path = corrupt(tmp_path, 1, idx_bytes(labels))
    assert_user_error_names(path, tmp_path)


@pytest.mark.parametrize("name", ["FashionMNIST", "MNIST"])
def test_nothing_found_lists_folders_and_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError) as info:
        load_mnist(cfg(tmp_path, name), True)
    message = str(info.value)
    for folder in (tmp_path, tmp_path / name, tmp_path / name / "raw"):
        assert f"{folder}/" in message
    if name == "FashionMNIST":
        assert str(tmp_path / "no-debian") in message
        assert "apt-get install dataset-fashion-mnist" in message
    else:
        assert "no-debian" not in message and "data.download: true" in message


def test_one_file_of_a_pair_is_not_enough(tmp_path: Path) -> None:
    images, _ = make_split(N_TRAIN, 1)
    write_file(tmp_path / vision_files.MNIST_FILES[True][0], idx_bytes(images), gz=False)
    with pytest.raises(UserError, match="not found"):
        load_mnist(cfg(tmp_path), True)


def test_debian_folder_used_when_root_has_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    splits = write_dataset(system, gz=True)
    monkeypatch.setattr(vision_files, "DEBIAN_FASHION_MNIST_DIRS", [system])
    _, y = load_mnist(cfg(tmp_path / "empty"), False)
    assert y.tolist() == splits[False][1].tolist()
    with pytest.raises(UserError, match="not found"):  # only for FashionMNIST
        load_mnist(cfg(tmp_path / "empty", "MNIST"), False)


def test_root_wins_over_debian_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dataset(tmp_path / "system", gz=True)
    monkeypatch.setattr(vision_files, "DEBIAN_FASHION_MNIST_DIRS", [tmp_path / "system"])
    write_dataset(tmp_path / "mine", gz=False)
    labels = np.full(N_TEST, 9, dtype=np.uint8)
    (tmp_path / "mine" / vision_files.MNIST_FILES[False][1]).write_bytes(idx_bytes(labels))
    _, y = load_mnist(cfg(tmp_path / "mine"), False)
    assert y.tolist() == [9] * N_TEST


def test_download_fallback_reads_raw_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits: dict[bool, tuple[np.ndarray, np.ndarray]] = {}

    def fake_download(root: str, train: bool, download: bool) -> None:
        assert download and Path(root) == tmp_path
        splits.update(write_dataset(Path(root) / "MNIST" / "raw", gz=False))

    # A stand-in torchvision (no network, and no slow import): only datasets.MNIST is used.
    fake = SimpleNamespace(datasets=SimpleNamespace(MNIST=fake_download))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    _, y = load_mnist(cfg(tmp_path, "MNIST", download=True), True)
    assert y.tolist() == splits[True][1].tolist()


def test_download_failure_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(root: str, train: bool, download: bool) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    fake = SimpleNamespace(datasets=SimpleNamespace(MNIST=offline))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with pytest.raises(UserError, match="could not download MNIST"):
        load_mnist(cfg(tmp_path, "MNIST", download=True), True)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision_files, "DEBIAN_FASHION_MNIST_DIRS", [DEBIAN])
    start = time.perf_counter()
    x_tr, y_tr = load_mnist(cfg(tmp_path), True)
    x_te, y_te = load_mnist(cfg(tmp_path), False)
    assert time.perf_counter() - start < 5.0
    assert x_tr.shape == (60000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert y_tr.tolist().count(0) == 6000  # FashionMNIST is balanced: 6000 per class
    for y in (y_tr, y_te):
        assert sorted(set(y.tolist())) == list(range(10))
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0 and x_tr.dtype == torch.float32
