"""Any directory of images as a dataset: one class per sub-folder, or a flat folder.

Layouts understood (`root` is what the user passes):

- `root/<class>/**/<image>`: the class index is the sorted position of the sub-folder name.
- `root/<image>`: flat, unlabelled (all labels 0, `num_classes` None).
- `root/train/...`, `root/test/...` (optionally `root/val/...`), each in one of the above
  layouts: the split folders are used as they are.

Without split folders, "test" is a seeded `test_size` fraction of the images.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from einops import rearrange
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vaekit.data.dataset import TensorImageDataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "find_images", "load_folder", "read_image"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm")
_IN_MEMORY_LIMIT_BYTES = 1 << 30


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _visible(paths: Any) -> list[Path]:
    return sorted(p for p in paths if not p.name.startswith("."))


def _images_below(folder: Path) -> list[Path]:
    return [p for p in _visible(folder.rglob("*")) if _is_image(p)]


def find_images(
    root: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[Path], list[int], tuple[str, ...] | None]:
    """Lists the images under root and their labels.

    Args:
        root: A folder with one sub-folder per class, or with the images directly in it.
        class_names: Class sub-folder names to index by (sorted names by default); lets
            several split folders share one class numbering.

    Returns:
        (files, labels, class_names); class_names is None for a flat folder.
    """
    root = Path(root)
    flat = [p for p in _visible(root.iterdir()) if _is_image(p)]
    class_dirs = [d for d in _visible(root.iterdir()) if d.is_dir() and _images_below(d)]
    if flat and class_dirs:
        raise ValueError(
            f"{root} mixes images ({flat[0].name}, ...) with class sub-folders "
            f"({class_dirs[0].name}, ...); move the images into a sub-folder or flatten it"
        )
    if flat:
        return flat, [0] * len(flat), None
    if not class_dirs:
        raise FileNotFoundError(
            f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files directly in "
            "it or in one sub-folder per class)"
        )
    names = tuple(class_names) if class_names is not None else tuple(d.name for d in class_dirs)
    files: list[Path] = []
    labels: list[int] = []
    for d in class_dirs:
        if d.name not in names:
            raise ValueError(f"class folder {d} is not one of the classes {names}")
        found = _images_below(d)
        files += found
        labels += [names.index(d.name)] * len(found)
    return files, labels, names


def read_image(
    path: str | os.PathLike[str],
    channels: int = 3,
    image_size: int | tuple[int, int] | None = None,
    keep_aspect: bool = True,
) -> Tensor:
    """Decodes one image file to float32 (channels, H, W) in [0, 1], optionally resized.

    Decoding uses Pillow (torchvision's own decoders are deprecated since torchvision 0.29).
    EXIF orientation is applied; 16-bit grey images are scaled by 1/65535, others by 1/255;
    colour is converted to grey with ITU-R 601 luma.

    Args:
        path: PNG, JPEG, WebP, GIF (first frame), BMP, TIFF or PPM file.
        channels: 1 for grey, 3 for RGB.
        image_size: Output (H, W), or an int for a square; `None` keeps the file's size.
        keep_aspect: Scale so the image covers the output and crop the centre; else stretch.

    Raises:
        ValueError: the file cannot be decoded; the message names it.
    """
    path = Path(path)
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            if pil.mode.startswith("I;16"):
                array = np.asarray(pil, dtype=np.float32) / 65535.0  # (H, W)
                x = torch.from_numpy(array)[None].expand(channels, -1, -1).contiguous()
            else:
                array = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
                img = torch.from_numpy(array.copy())  # uint8 (H, W) or (H, W, 3)
                img = rearrange(img, "h w -> 1 h w" if img.dim() == 2 else "h w c -> c h w")
                x = TF.to_dtype(img, torch.float32, scale=True)
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, ...
        raise ValueError(f"cannot read image {path}: {e}; remove or replace the file") from e
    if image_size is not None:
        x = _resize(x, _as_size(image_size), keep_aspect)
    return x


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return size[0], size[1]


def _resize(x: Tensor, size: tuple[int, int], keep_aspect: bool) -> Tensor:
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if keep_aspect:
        factor = max(size[0] / h, size[1] / w)
        covering = [max(size[0], math.ceil(h * factor)), max(size[1], math.ceil(w * factor))]
        x = TF.resize(x, covering, antialias=True)
        x = TF.center_crop(x, list(size))
    else:
        x = TF.resize(x, list(size), antialias=True)
    return x.clamp_(0.0, 1.0)


class ImageFolderDataset(Dataset[tuple[Tensor, Tensor]]):
    """Images decoded from disk on each access (for folders too large to hold in memory).

    Attributes:
        files: The image paths, index-aligned with `labels`.
        labels: int64 (N,) class indices.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: Tensor,
        *,
        image_size: tuple[int, int],
        channels: int,
        keep_aspect: bool = True,
        class_names: tuple[str, ...] | None = None,
    ) -> None:
        self.files = list(files)
        self.labels = labels
        self.image_size = image_size
        self.channels = channels
        self.keep_aspect = keep_aspect
        self.class_names = class_names
        self.num_classes = None if class_names is None else len(class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = read_image(self.files[index], self.channels, self.image_size, self.keep_aspect)
        return x, self.labels[index]


def load_folder(
    *,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] = 64,
    channels: int = 3,
    keep_aspect: bool = True,
    test_size: float = 0.1,
    seed: int = 0,
    in_memory: bool | None = None,
) -> Dataset[tuple[Tensor, Tensor]]:
    """A split of a folder of images (see the module docstring for layouts).

    Args:
        split: "train", "val" (needs a `root/val/` folder) or "test".
        root: The folder.
        download: Not supported (raises if True).
        image_size: Output size, an int for square images or (H, W).
        channels: 1 (grey) or 3 (RGB); images are converted.
        keep_aspect: Resize to cover and centre-crop (True) or stretch (False).
        test_size: Fraction of the images held out as "test" when root has no split folders;
            0 puts every image in "train".
        seed: Seed of that split.
        in_memory: Decode everything once into a `TensorImageDataset` (True) or decode on
            each access (False). By default in memory when that takes at most 1 GiB.
    """
    if root is None:
        raise ValueError("dataset 'folder' needs root=, the directory of images")
    if download:
        raise ValueError("dataset 'folder' reads local images; it cannot download")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    size = _as_size(image_size)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {base} does not exist or is not a directory")

    split_dirs = {s: base / s for s in ("train", "val", "test") if (base / s).is_dir()}
    if "train" in split_dirs and "test" in split_dirs:
        if split not in split_dirs:
            raise ValueError(
                f"{base} has no {split}/ folder; pass val_size= to carve 'val' from 'train'"
            )
        names = sorted(
            {d.name for sd in split_dirs.values() for d in _visible(sd.iterdir()) if d.is_dir()}
        )
        files, labels, class_names = find_images(split_dirs[split], names or None)
    else:
        if split == "val":
            raise ValueError(
                f"{base} has no val/ folder; pass val_size= to carve 'val' from 'train'"
            )
        files, labels, class_names = find_images(base)
        files, labels = _split(files, labels, split, test_size, seed, base)

    y = torch.tensor(labels, dtype=torch.int64)
    n_bytes = len(files) * channels * size[0] * size[1] * 4
    if in_memory is None:
        in_memory = n_bytes <= _IN_MEMORY_LIMIT_BYTES
    if not in_memory:
        return ImageFolderDataset(
            files,
            y,
            image_size=size,
            channels=channels,
            keep_aspect=keep_aspect,
            class_names=class_names,
        )
    x = torch.empty(len(files), channels, *size)
    for i, path in enumerate(tqdm(files, desc=f"reading {base.name}", disable=None)):
        x[i] = read_image(path, channels, size, keep_aspect)
    return TensorImageDataset(
        x, y, class_names=class_names, name=f"folder:{base.name}:{split}", validate=False
    )


def _split(
    files: list[Path], labels: list[int], split: str, test_size: float, seed: int, base: Path
) -> tuple[list[Path], list[int]]:
    if not 0.0 <= test_size < 1.0:
        raise ValueError(f"test_size must lie in [0, 1), got {test_size!r}")
    n_test = round(test_size * len(files))
    if split == "test" and n_test == 0:
        raise ValueError(
            f"test_size={test_size} holds out no image of the {len(files)} in {base}; raise "
            "it or add train/ and test/ folders"
        )
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))
    chosen = (perm[:n_test] if split == "test" else perm[n_test:]).sort().values.tolist()
    return [files[i] for i in chosen], [labels[i] for i in chosen]
