"""The dataset registry and `load_dataset`, the one entry point to every data set."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from vaekit.data.dataset import TensorImageDataset, static_binarize

__all__ = ["default_data_root", "list_datasets", "load_dataset", "register_dataset"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DatasetBuilder = Callable[..., Dataset[Any]]


@dataclass(frozen=True)
class _Entry:
    builder: DatasetBuilder
    splits: tuple[str, ...]  # the splits the builder serves itself


_REGISTRY: dict[str, _Entry] = {}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def default_data_root() -> Path:
    """Where datasets are downloaded to and looked for when `root=None`.

    `$VAEKIT_DATA_DIR` if set, else `$XDG_CACHE_HOME/vaekit/datasets`, else
    `~/.cache/vaekit/datasets`.
    """
    if env := os.environ.get("VAEKIT_DATA_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "vaekit" / "datasets"


def register_dataset(
    name: str,
    fn: DatasetBuilder | None = None,
    *,
    splits: Sequence[str] = ("train", "test"),
    overwrite: bool = False,
) -> Any:
    """Registers a dataset builder under `name` for `load_dataset` (also as a decorator).

    The builder is called as `fn(split=split, root=root, download=download, **kwargs)` and
    returns a map-style dataset of `(x, label)` pairs, ideally a `TensorImageDataset`.
    `load_dataset` carves a validation split from "train" itself (`val_size=`) and applies
    `binarize=`, so a builder only has to serve the splits it lists in `splits`.

    Args:
        name: Dataset name; matched case-insensitively, with "_" read as "-".
        fn: The builder. Leave it out to use `register_dataset` as a decorator.
        splits: The splits `fn` serves, a subset of ("train", "val", "test").
        overwrite: Replace an existing entry instead of raising.

    Example:
        >>> import torch
        >>> @register_dataset("noise")
        ... def noise(split, root=None, download=False, n=8):
        ...     return TensorImageDataset(torch.rand(n, 1, 4, 4))
        >>> len(load_dataset("noise", n=5))
        5
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {tuple(splits)}")

    def register(builder: DatasetBuilder) -> DatasetBuilder:
        if not callable(builder):
            raise TypeError(f"dataset builder must be callable, got {type(builder).__name__}")
        key = _normalize(name)
        if key in _REGISTRY and not overwrite:
            raise ValueError(
                f"dataset {key!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[key] = _Entry(builder, tuple(splits))
        return builder

    return register if fn is None else register(fn)


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`, sorted."""
    return sorted(_REGISTRY)


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    binarize: str | None = None,
    binarize_seed: int = 0,
    val_size: int | float | None = None,
    val_seed: int = 0,
    **kwargs: Any,
) -> Dataset[Any]:
    """Loads a data set split as a map-style dataset of `(x, label)` pairs.

    `x` is a float32 (C, H, W) image in [0, 1] and `label` a 0-dim int64 tensor. In-memory
    sets come back as `TensorImageDataset` (with `.x`, `.labels`, `.num_classes`,
    `.class_names`); CelebA is read lazily from disk.

    Built-in names (see `list_datasets()`):

    - `"shapes"`: procedural dSprites-like sprites, no files needed (`image_size=64`,
      `num_scales=4`, `num_rotations=8`, `num_positions=12`, `seed=0`, `test_size=0.1`).
    - `"mnist"`, `"fashion-mnist"`, `"kmnist"`: IDX files from `root` (the files themselves or
      torchvision's `root/FashionMNIST/raw/` layout), Debian's `dataset-fashion-mnist` at
      `/usr/share/datasets/fashion-mnist/`, or torchvision with `download=True`.
    - `"cifar10"`: torchvision's layout in `root`, or `download=True`.
    - `"celeba"`: torchvision's layout in `root`, or `download=True` (`image_size=64`).
    - `"folder"`: a directory of images, one class per sub-folder or flat
      (`root=`, `image_size=64`, `channels=3`).

    Args:
        name: Dataset name, one of `list_datasets()`.
        split: "train", "val" or "test". "val" is carved from "train" when `val_size` is given.
        root: Where to look for (and download) the files; defaults to `default_data_root()`.
        download: Fetch missing files through torchvision (needs network).
        binarize: `None`; `"static"` to binarize once with `binarize_seed` (fixed binarized
            test sets); `"dynamic"` to mark the set for a fresh Bernoulli draw per access
            (`TensorImageDataset.binarize`; a trainer calls `dynamic_binarize` per batch).
        binarize_seed: Seed of the static binarization.
        val_size: Images held out of "train" as "val": a count, or a fraction in (0, 1).
            Pass the same value when loading "train" and "val" so they do not overlap;
            ignored for "test".
        val_seed: Seed of the train/val split.
        **kwargs: Dataset-specific options, passed on to the builder.

    Raises:
        ValueError: unknown name, split or option.
        FileNotFoundError: the data is missing; the message says how to get it.

    Example:
        >>> train = load_dataset("shapes", split="train", image_size=32, num_positions=4)
        >>> x, label = train[0]
        >>> x.shape, train.class_names
        (torch.Size([1, 32, 32]), ('square', 'ellipse', 'heart'))
    """
    key = _normalize(name) if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())} "
            "(or register_dataset(name, fn) your own)"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if binarize is not None and binarize not in ("static", "dynamic"):
        raise ValueError(f"binarize must be None, 'static' or 'dynamic', got {binarize!r}")
    entry = _REGISTRY[key]
    _check_kwargs(key, entry.builder, kwargs)

    def build(s: str) -> Dataset[Any]:
        return entry.builder(split=s, root=root, download=download, **kwargs)

    if split == "test" or (val_size is None and split in entry.splits):
        dataset = build(split)
    elif split == "val" and val_size is None:
        raise ValueError(
            f"dataset {key!r} has no 'val' split of its own; pass val_size= (a count or a "
            "fraction) to carve one from 'train', and the same val_size when loading 'train'"
        )
    else:
        dataset = _carve_val(build("train"), split, val_size, val_seed)
    if binarize is not None:
        dataset = _binarize(dataset, binarize, binarize_seed)
    return dataset


def _check_kwargs(key: str, builder: DatasetBuilder, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("split", "root", "download")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        own = f"its own options are {', '.join(accepted)}" if accepted else "it has no options"
        raise ValueError(
            f"dataset {key!r} got unexpected option(s) {', '.join(unknown)}; {own}, and "
            "every dataset takes binarize, binarize_seed, val_size and val_seed"
        )


def _carve_val(
    train: Dataset[Any], split: str, val_size: int | float | None, seed: int
) -> Dataset[Any]:
    n = len(train)  # type: ignore[arg-type]
    if val_size is None:
        return train
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ValueError(f"val_size must be a count or a fraction, got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"a fractional val_size must lie in (0, 1), got {val_size}")
        n_val = round(val_size * n)
    else:
        n_val = val_size
    if not 0 < n_val < n:
        raise ValueError(
            f"val_size={val_size} gives {n_val} of {n} training images; it must leave at "
            "least one image in each of train and val"
        )
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    indices = perm[:n_val] if split == "val" else perm[n_val:]
    indices = indices.sort().values
    if isinstance(train, TensorImageDataset):
        carved = train.subset(indices)
        carved.name = f"{train.name.rsplit(':', 1)[0]}:{split}" if train.name else None
        return carved
    return Subset(train, indices.tolist())


def _binarize(dataset: Dataset[Any], mode: str, seed: int) -> TensorImageDataset:
    if not isinstance(dataset, TensorImageDataset):
        raise ValueError(
            f"binarize={mode!r} needs an in-memory TensorImageDataset, got "
            f"{type(dataset).__name__}; binarize batches with dynamic_binarize(x) instead"
        )
    if dataset.binarize == "static":
        return dataset
    x = static_binarize(dataset.x, seed) if mode == "static" else dataset.x
    return TensorImageDataset(
        x,
        dataset.labels,
        class_names=dataset.class_names,
        num_classes=dataset.num_classes,
        factors=dataset.factors,
        factor_classes=dataset.factor_classes,
        factor_names=dataset.factor_names,
        binarize="static" if mode == "static" else "dynamic",
        name=dataset.name,
        validate=False,
    )
