"""CelebA, read lazily through torchvision: aligned faces centre-cropped and resized.

202,599 images do not fit comfortably in memory as float32, so each item is decoded on access.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import Dataset

from vaekit.data.registry import default_data_root

__all__ = ["CelebADataset", "load_celeba"]

_CROP = 148  # the usual VAE crop of the 178x218 aligned faces, before resizing
_SPLITS = {"train": "train", "val": "valid", "test": "test"}


class CelebADataset(Dataset[tuple[Tensor, Tensor]]):
    """Wraps a dataset of PIL face images as float32 (3, size, size) images in [0, 1].

    The label is always 0 (CelebA has no class); the 40 binary attributes are in
    `attributes` with `attribute_names` when the wrapped dataset has them.

    Args:
        base: A dataset whose items are `(PIL image, target)`, e.g. torchvision's `CelebA`.
        image_size: Output height and width in pixels.
    """

    num_classes = None
    class_names = None

    def __init__(self, base: Any, image_size: int = 64) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.base = base
        self.image_size = image_size
        self.attributes: Tensor | None = getattr(base, "attr", None)
        self.attribute_names: list[str] | None = getattr(base, "attr_names", None)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, _ = self.base[index]
        x = TF.pil_to_tensor(image.convert("RGB"))  # uint8 (3, H, W)
        x = TF.center_crop(x, [min(_CROP, *x.shape[-2:])] * 2)
        x = TF.resize(x, [self.image_size] * 2, antialias=True)
        return TF.to_dtype(x, torch.float32, scale=True), torch.tensor(0)


def load_celeba(
    *,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int = 64,
) -> CelebADataset:
    """A CelebA split ("train", "val" = CelebA's "valid", "test"), read lazily."""
    if split not in _SPLITS:
        raise ValueError(f"CelebA serves {', '.join(_SPLITS)}, got {split!r}")
    base = Path(root).expanduser() if root is not None else default_data_root()
    try:
        tv = torchvision.datasets.CelebA(
            str(base), split=_SPLITS[split], target_type="attr", download=download
        )
    except Exception as e:  # missing or corrupt files, failed download, gdown missing
        raise FileNotFoundError(
            f"CelebA not found or incomplete in {base / 'celeba'} ({e}). To get it: pass "
            "download=True (needs network and the gdown package: pip install gdown); or put "
            "torchvision's layout in root/celeba/: img_align_celeba/ (the unzipped "
            "img_align_celeba.zip), list_attr_celeba.txt, identity_CelebA.txt, "
            "list_bbox_celeba.txt, list_landmarks_align_celeba.txt, list_eval_partition.txt"
        ) from e
    return CelebADataset(tv, image_size=image_size)
