"""Array datasets from local files: .npz, the CIFAR-10/100 python pickles, (Fashion-)MNIST IDX.

Nothing is downloaded (these machines have no internet beyond package registries): a loader
whose files are missing fails at once with a message that says where to put them. Fashion-MNIST
ships as the Debian package `dataset-fashion-mnist` (installed by `make setup` where apt-get
exists) under /usr/share/datasets/fashion-mnist/.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


class ArrayDataset(NamedTuple):
    """images: (N, H, W, C) uint8; labels: (N,) int64 class indices."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def _require(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}. {fix} (nothing is downloaded)")
    return path


def as_dataset(images: np.ndarray, labels: np.ndarray) -> ArrayDataset:
    """Validates and normalises arrays: (N, H, W) or (N, H, W, C) uint8 images, N labels."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8; got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C); got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be one integer per image: {len(images)} images but labels of "
                         f"shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers; got {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0; label {int(np.argmin(labels))} is {labels.min()}")
    return ArrayDataset(np.ascontiguousarray(images), labels.astype(np.int64))


def load_npz(path: Union[str, Path], images_key: str = "images", labels_key: str = "labels") -> ArrayDataset:
    """An .npz with uint8 `images` (N, H, W[, C]) and integer `labels` (N,)."""
    path = _require(Path(path), "the .npz file", "Pass the path of an .npz with 'images' and 'labels'")
    with np.load(path) as data:
        missing = [k for k in (images_key, labels_key) if k not in data]
        if missing:
            raise KeyError(f"{path} has no array {missing[0]!r}; it has {sorted(data.keys())}")
        return as_dataset(data[images_key], data[labels_key])


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {tuple(dims.tolist())}, {data.size} bytes "
                         f"follow")
    return data.reshape(dims)


def load_idx(images_path: Union[str, Path], labels_path: Union[str, Path]) -> ArrayDataset:
    """(Fashion-)MNIST from a pair of IDX files (…-images-idx3-ubyte[.gz], …-labels-idx1-ubyte[.gz])."""
    for p in (images_path, labels_path):
        _require(Path(p), "IDX file", "Put the (Fashion-)MNIST IDX files there or pass their paths")
    return as_dataset(read_idx(images_path), read_idx(labels_path))


def fashion_mnist(split: str = "train", root: Union[str, Path] = FASHION_MNIST_DIR) -> ArrayDataset:
    """Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey, 10 classes, MIT licence)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    fix = ("Install it with `apt-get install dataset-fashion-mnist` (make setup does) or pass "
           "root= a folder holding the four IDX files")
    images = _require(root / f"{prefix}-images-idx3-ubyte.gz", "Fashion-MNIST", fix)
    labels = _require(root / f"{prefix}-labels-idx1-ubyte.gz", "Fashion-MNIST", fix)
    return load_idx(images, labels)


def load_cifar(root: Union[str, Path], split: str = "train") -> ArrayDataset:
    """CIFAR-10 (cifar-10-batches-py) or CIFAR-100 (cifar-100-python) from their python pickles."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    fix = ("Unpack cifar-10-python.tar.gz or cifar-100-python.tar.gz there (the folder holding "
           "data_batch_1..5 / test_batch, or train / test)")
    if (root / "data_batch_1").exists() or (root / "test_batch").exists():
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = b"labels"
    elif (root / "train").exists() or (root / "test").exists():
        names, label_key = [split], b"fine_labels"
    else:
        raise FileNotFoundError(f"no CIFAR pickles in {root}. {fix} (nothing is downloaded)")
    images, labels = [], []
    for name in names:
        with open(_require(root / name, "CIFAR pickle", fix), "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key]))
    return as_dataset(np.concatenate(images), np.concatenate(labels))
