"""Image data sets from files: CIFAR-10/100 python batches (read with a restricted unpickler
that only rebuilds numpy arrays, so a file can never run code) and MNIST/FashionMNIST (idx files
through torchvision)."""

from __future__ import annotations

import codecs
import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netsize.errors import UserError
from netsize.recipe import TorchvisionData

CIFAR = {  # name -> (folder, train files, test files, label key)
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def load_cifar(cfg: TorchvisionData) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    folder, train_files, test_files, label_key = CIFAR[cfg.name]
    base = Path(cfg.root) / folder
    missing = [f for f in train_files + test_files if not (base / f).is_file()]
    if missing:
        if not cfg.download:
            raise UserError(f"{cfg.name} files not found: expected {', '.join(missing)} under "
                            f"{base}/; set data.download: true or copy the files there.")
        _download_cifar(cfg)
    return tuple(_read_cifar_files([base / f for f in files], label_key, cfg.limit)
                 for files in (train_files, test_files))


def _download_cifar(cfg: TorchvisionData) -> None:
    # Only download and extract (md5-checked); torchvision's dataset class would unpickle the
    # batches itself, so it is never instantiated for CIFAR.
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    meta = getattr(datasets, cfg.name)
    try:
        download_and_extract_archive(meta.url, cfg.root, filename=meta.filename, md5=meta.tgz_md5)
    except (OSError, RuntimeError) as error:
        raise UserError(f"could not download {cfg.name} to {cfg.root} ({error}); copy the files "
                        f"there by hand or check the network.") from None


def _read_cifar_files(
    paths: list[Path], label_key: str, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for path in paths:
        if limit is not None and sum(len(y) for y in ys) >= limit:
            break  # enough images for --limit
        x, y = _read_cifar_batch(path, label_key)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR python batch -> images (N, 3, 32, 32) in [0, 1] and labels (N,) int64."""
    with open(path, "rb") as f:
        try:
            batch = _SafeUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
            raise UserError(f"{path}: not a readable CIFAR python batch ({error}); replace it "
                            f"with the original file.") from None
    data, labels = _key(batch, "data", path), _key(batch, label_key, path)
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{path}: data has shape {data.shape} for {len(labels)} labels, expected "
                        f"(N, 3072) uint8; replace it with the original file.")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()).float() / 255.0  # (N, 3, 32, 32)
    return x, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _key(batch: Any, name: str, path: Path) -> Any:
    if isinstance(batch, dict):
        for key in (name.encode(), name):
            if key in batch:
                return batch[key]
    raise UserError(f"{path}: no {name!r} entry, so it is not a CIFAR python batch; replace it "
                    f"with the original file.")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1').
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r}")
    return codecs.encode(text, "latin1")


@functools.cache
def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar,
               "_frombuffer": numeric._frombuffer}  # type: ignore[attr-defined]
    table: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_encode,
                                         ("numpy", "ndarray"): np.ndarray,
                                         ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        for name, func in allowed.items():
            module = "multiarray" if name != "_frombuffer" else "numeric"
            table[(f"{core}.{module}", name)] = func
    return table


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, numbers, strings and numpy arrays; refuses every other global."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.path = getattr(file, "name", "a CIFAR batch file")

    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise UserError(f"{self.path} contains code ({module}.{name}), not just arrays; refusing "
                        f"to load it. Replace it with the original CIFAR file.")


def load_mnist(cfg: TorchvisionData, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    try:  # reads the raw idx files (no pickle)
        ds = getattr(datasets, cfg.name)(cfg.root, train=train, download=cfg.download)
    except RuntimeError as error:
        where = Path(cfg.root) / cfg.name / "raw"
        hint = ("set data.download: true or copy the files there" if not cfg.download
                else f"download failed ({error}); copy the files there by hand")
        raise UserError(f"{cfg.name} files not found under {where}/; {hint}.") from None
    x = ds.data.unsqueeze(1).float() / 255.0  # (N, 28, 28) uint8 -> (N, 1, 28, 28) in [0, 1]
    return x, ds.targets.to(torch.int64)
