"""MNIST, Fashion-MNIST and KMNIST from their IDX files, with torchvision as the downloader.

Offline, the files are looked for in `root` (the four files themselves, or torchvision's
`root/<Name>/raw/` layout) and then in the system-wide location a package manager puts them
in (Debian's `dataset-fashion-mnist` installs `/usr/share/datasets/fashion-mnist/`). With
`download=True` and nothing found, torchvision fetches them into `root`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
from einops import rearrange
from torch import Tensor

from vaekit.data.dataset import TensorImageDataset
from vaekit.data.idx import IDXFormatError, read_idx
from vaekit.data.registry import default_data_root

__all__ = ["IDX_DATASETS", "find_idx_files", "load_idx_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IDXDatasetSpec:
    """Where one IDX data set lives and what its labels mean."""

    title: str  # for messages
    torchvision_name: str  # class in torchvision.datasets and its root/<name>/raw folder
    class_names: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()  # where a package manager installs the files
    apt_package: str | None = None


IDX_DATASETS: dict[str, IDXDatasetSpec] = {
    "mnist": IDXDatasetSpec("MNIST", "MNIST", tuple(str(d) for d in range(10))),
    "fashion-mnist": IDXDatasetSpec(
        "Fashion-MNIST",
        "FashionMNIST",
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
    ),
    "kmnist": IDXDatasetSpec(
        "KMNIST", "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    ),
}

_PREFIX = {"train": "train", "test": "t10k"}


def _file_names(split: str) -> tuple[str, str]:
    prefix = _PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _search_dirs(spec: IDXDatasetSpec, root: str | os.PathLike[str] | None) -> list[Path]:
    base = Path(root).expanduser() if root is not None else default_data_root()
    return [base, base / spec.torchvision_name / "raw", *map(Path, spec.system_dirs)]


def find_idx_files(
    spec: IDXDatasetSpec, split: str, root: str | os.PathLike[str] | None = None
) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of a split, or None when no searched folder has both.

    Folders are searched in order: `root`, `root/<torchvision name>/raw`, then the system
    folders; in each, the `.gz` file is preferred to the plain one.
    """
    images_name, labels_name = _file_names(split)
    for folder in _search_dirs(spec, root):
        found = []
        for name in (images_name, labels_name):
            candidates = [folder / f"{name}.gz", folder / name]
            found.append(next((p for p in candidates if p.is_file()), None))
        images, labels = found
        if images is not None and labels is not None:
            return images, labels
    return None


def _missing_message(spec: IDXDatasetSpec, split: str, root: Any) -> str:
    images_name, labels_name = _file_names(split)
    looked = ", ".join(str(d) for d in _search_dirs(spec, root))
    ways = [
        "pass download=True to fetch them with torchvision (needs network)",
    ]
    if spec.apt_package:
        ways.append(
            f"install Debian's package (`sudo apt-get install {spec.apt_package}`), which puts "
            f"them in {spec.system_dirs[0]}/"
        )
    ways.append(
        f"put {images_name}.gz and {labels_name}.gz (or the unzipped files) in root/ or in "
        f"root/{spec.torchvision_name}/raw/ and pass root="
    )
    return (
        f"{spec.title} {split} files not found (looked in: {looked}). To get them: "
        + "; or ".join(ways)
        + "."
    )


def _download(spec: IDXDatasetSpec, split: str, root: Any) -> tuple[Tensor, Tensor]:
    target = Path(root).expanduser() if root is not None else default_data_root()
    logger.info("downloading %s %s with torchvision into %s", spec.title, split, target)
    cls = getattr(torchvision.datasets, spec.torchvision_name)
    try:
        tv = cls(str(target), train=split == "train", download=True)
    except Exception as e:  # network errors come in many types; say what to do instead
        raise RuntimeError(
            f"downloading {spec.title} with torchvision failed ({e}). "
            + _missing_message(spec, split, root)
        ) from e
    return tv.data, tv.targets


def load_idx_dataset(
    key: str,
    *,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> TensorImageDataset:
    """Loads a split of MNIST, Fashion-MNIST or KMNIST (`key` in `IDX_DATASETS`) into memory.

    Returns:
        A `TensorImageDataset` with x of shape (N, 1, 28, 28) float32 in [0, 1] (pixel / 255)
        and int64 labels in [0, 10).
    """
    spec = IDX_DATASETS[key]
    if split not in _PREFIX:
        raise ValueError(f"{spec.title} serves 'train' and 'test', got {split!r}")
    found = find_idx_files(spec, split, root)
    if found is not None:
        logger.debug("reading %s %s from %s", spec.title, split, found[0].parent)
        images, labels = read_idx(found[0]), read_idx(found[1])
        where = str(found[0].parent)
    elif download:
        images, labels = _download(spec, split, root)
        where = "torchvision's download"
    else:
        raise FileNotFoundError(_missing_message(spec, split, root))
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise IDXFormatError(
            f"{spec.title} images from {where}: expected uint8 of shape (N, H, W), got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if labels.shape != images.shape[:1]:
        raise IDXFormatError(
            f"{spec.title} in {where}: {images.shape[0]} images but labels of shape "
            f"{tuple(labels.shape)}"
        )
    labels = labels.long()
    if labels.numel() and not (labels.min() >= 0 and labels.max() < len(spec.class_names)):
        raise IDXFormatError(
            f"{spec.title} labels in {where} must lie in [0, {len(spec.class_names)}), got "
            f"[{labels.min().item()}, {labels.max().item()}]"
        )
    x = rearrange(images, "n h w -> n 1 h w").float().div_(255)
    return TensorImageDataset(
        x, labels, class_names=spec.class_names, name=f"{key}:{split}", validate=False
    )


BUILDERS = {key: partial(load_idx_dataset, key) for key in IDX_DATASETS}
