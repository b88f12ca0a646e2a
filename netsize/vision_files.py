"""Image data sets from files: CIFAR-10/100 python batches (read with a restricted unpickler
that only rebuilds numpy arrays, so a file can never run code) and MNIST/FashionMNIST (raw idx
files, gzipped or not, parsed here with numpy: no pickle, no fixed folder layout)."""

from __future__ import annotations

import codecs
import functools
import gzip
import pickle
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from netsize.errors import UserError

if TYPE_CHECKING:
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


# -------------------------------------------------------------------------------- MNIST idx files
# Folders searched for FashionMNIST after data.root: where Debian's `dataset-fashion-mnist` puts
# the four gzipped idx files. A module constant so tests can point it elsewhere.
DEBIAN_FASHION_MNIST_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]

MNIST_FILES = {  # train? -> (images, labels) file names, each optionally with ".gz"
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_N_CLASSES = 10
_SIDE = 28
_CORRUPT_FIX = "re-install dataset-fashion-mnist or re-copy the file"


def load_mnist(cfg: TorchvisionData, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST/FashionMNIST split -> images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64.

    Looks in data.root, data.root/<name>, data.root/<name>/raw (torchvision's layout), then (for
    FashionMNIST) Debian's folder; stops at the first folder holding both files of the split.
    data.limit keeps the first N training images; the test split is always whole.
    """
    root = Path(cfg.root).expanduser()
    root_dirs = [root, root / cfg.name, root / cfg.name / "raw"]
    system_dirs = [Path(d) for d in DEBIAN_FASHION_MNIST_DIRS] if cfg.name == "FashionMNIST" else []
    searched = list(dict.fromkeys(d.absolute() for d in root_dirs + system_dirs))
    found = _find_idx_pair(searched, train)
    if found is None:
        if not cfg.download:
            raise UserError(f"{cfg.name} {'training' if train else 'test'} idx files "
                            f"({' and '.join(MNIST_FILES[train])}, optionally .gz) not found in "
                            f"{', '.join(f'{d}/' for d in searched)}; {_mnist_fix(cfg.name)}.")
        _download_mnist(cfg, root)
        raw = (root / cfg.name / "raw").absolute()
        found = _find_idx_pair([raw], train)
        if found is None:
            raise UserError(f"downloaded {cfg.name}, but its idx files are not in {raw}/; copy "
                            f"them there by hand.")
    images_path, labels_path = found
    images = _read_idx(images_path, ndim=3)  # (N, rows, cols) uint8
    labels = _read_idx(labels_path, ndim=1)  # (N,) uint8
    if images.shape[1:] != (_SIDE, _SIDE):
        raise UserError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected "
                        f"{_SIDE}x{_SIDE}; {_CORRUPT_FIX}.")
    if len(labels) and int(labels.max()) >= _N_CLASSES:
        raise UserError(f"{labels_path}: has a label of {int(labels.max())}, expected 0..."
                        f"{_N_CLASSES - 1}; {_CORRUPT_FIX}.")
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels; {_CORRUPT_FIX}.")
    if train and cfg.limit is not None:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    x = images.reshape(-1, 1, _SIDE, _SIDE).astype(np.float32)  # (N, 1, 28, 28), a fresh copy
    np.divide(x, 255.0, out=x)  # [0, 255] -> [0, 1]
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def _mnist_fix(name: str) -> str:
    if name == "FashionMNIST":
        return ("install Debian's package with `apt-get install dataset-fashion-mnist`, or set "
                "data.root to a folder holding the idx files")
    return "set data.root to a folder holding the idx files or data.download: true"


def _find_idx_pair(folders: list[Path], train: bool) -> tuple[Path, Path] | None:
    """The (images, labels) files of the split in the first folder holding both, else None."""
    for folder in folders:
        pair = [_idx_file(folder, stem) for stem in MNIST_FILES[train]]
        if pair[0] is not None and pair[1] is not None:
            return pair[0], pair[1]
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):  # the uncompressed file is quicker to read
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of uint8 (gzipped or not) -> array with the header's shape, validated."""
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != _IDX_UINT8 or data[3] != ndim:
        raise UserError(f"{path}: not an idx file of {ndim}-dimensional uint8 data (bad magic "
                        f"number); {_CORRUPT_FIX}.")
    if len(data) < header:
        raise UserError(f"{path}: idx header cut short; {_CORRUPT_FIX}.")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if min(shape) < 0 or len(data) - header != expected:
        raise UserError(f"{path}: holds {len(data) - header} data bytes but its header "
                        f"{'x'.join(map(str, shape))} needs {expected}; {_CORRUPT_FIX}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            if f.read(2) != _GZIP_MAGIC:  # told apart by content, not by the ".gz" name
                f.seek(0)
                return f.read()
            f.seek(0)
            with gzip.GzipFile(fileobj=f) as g:
                return g.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise UserError(f"{path}: truncated or corrupt gzip data ({type(error).__name__}); "
                        f"{_CORRUPT_FIX}.") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or type(error).__name__}); "
                        f"{_CORRUPT_FIX}.") from None


def _download_mnist(cfg: TorchvisionData, root: Path) -> None:
    # torchvision only downloads (md5-checked) and unpacks into root/<name>/raw; the files it
    # wrote are then read with the parser above, like any others.
    from torchvision import datasets

    try:
        getattr(datasets, cfg.name)(str(root), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise UserError(f"could not download {cfg.name} to {(root / cfg.name / 'raw').absolute()}/"
                        f" ({error}); copy the idx files there by hand or check the network."
                        ) from None
