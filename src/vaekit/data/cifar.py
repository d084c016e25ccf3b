"""CIFAR-10 in memory: torchvision's Python layout (checksummed) or the binary version.

torchvision's `cifar-10-batches-py` files are pickles; torchvision checks each file's MD5
against the published one before unpickling, so only the genuine files are ever loaded. The
binary version (`cifar-10-batches-bin/`, fixed-size records) needs no unpickling and is read
here directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from einops import rearrange

from vaekit.data.dataset import TensorImageDataset
from vaekit.data.registry import default_data_root

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "read_cifar10_binary"]

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_BINARY_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_RECORD = 1 + 3 * 32 * 32  # label byte + CHW pixels


def read_cifar10_binary(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reads CIFAR-10 binary batch files.

    Returns:
        images: uint8 (N, 3, 32, 32); labels: int64 (N,).
    """
    images, labels = [], []
    for path in files:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _RECORD:
            raise ValueError(
                f"{path}: {raw.size} bytes is not a whole number of {_RECORD}-byte CIFAR-10 "
                "records; the file is truncated or not a CIFAR-10 binary batch"
            )
        records = raw.reshape(-1, _RECORD)
        labels.append(torch.from_numpy(records[:, 0].astype(np.int64)))
        images.append(torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy()))
    y = torch.cat(labels)
    if y.max() >= len(CIFAR10_CLASSES):
        raise ValueError(f"CIFAR-10 labels in {files[0].parent} exceed 9: not CIFAR-10 data")
    return torch.cat(images), y


def _missing_message(split: str, base: Path) -> str:
    return (
        f"CIFAR-10 {split} not found in {base}. To get it: pass download=True to fetch it "
        f"with torchvision into root (needs network); or put torchvision's layout "
        f"(root/cifar-10-batches-py/ from cifar-10-python.tar.gz) or the binary version "
        f"(root/cifar-10-batches-bin/ from cifar-10-binary.tar.gz) under root and pass root=."
    )


def _load_torchvision(split: str, base: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        tv: Any = torchvision.datasets.CIFAR10(str(base), train=split == "train", download=download)
    except Exception as e:  # missing, corrupt (MD5) or a failed download
        raise FileNotFoundError(f"{e}. " + _missing_message(split, base)) from e
    images = rearrange(torch.from_numpy(tv.data), "n h w c -> n c h w")  # tv.data: uint8 NHWC
    return images, torch.as_tensor(tv.targets, dtype=torch.int64)


def load_cifar10(
    *,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> TensorImageDataset:
    """Loads a CIFAR-10 split into memory: x of shape (N, 3, 32, 32) float32 in [0, 1]."""
    if split not in _BINARY_FILES:
        raise ValueError(f"CIFAR-10 serves 'train' and 'test', got {split!r}")
    base = Path(root).expanduser() if root is not None else default_data_root()
    binary = [base / "cifar-10-batches-bin" / f for f in _BINARY_FILES[split]]
    if (base / "cifar-10-batches-py").is_dir():
        images, labels = _load_torchvision(split, base, download=False)
    elif all(p.is_file() for p in binary):
        images, labels = read_cifar10_binary(binary)
    elif download:
        logger.info("downloading CIFAR-10 with torchvision into %s", base)
        images, labels = _load_torchvision(split, base, download=True)
    else:
        raise FileNotFoundError(_missing_message(split, base))
    return TensorImageDataset(
        images.float().div_(255),
        labels,
        class_names=CIFAR10_CLASSES,
        name=f"cifar10:{split}",
        validate=False,
    )
