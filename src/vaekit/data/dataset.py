"""In-memory image datasets and Bernoulli binarization.

`TensorImageDataset` is what every small built-in dataset (shapes, the IDX datasets, CIFAR-10,
a small image folder) returns. It keeps the whole data set as two tensors, so a trainer can
skip the `DataLoader` and index batches straight out of `dataset.x` and `dataset.labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["BinarizeMode", "TensorImageDataset", "dynamic_binarize", "static_binarize"]

BinarizeMode = Literal["static", "dynamic"]
_BINARIZE_MODES = ("static", "dynamic")


class TensorImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """A map-style dataset of `(x, label)` pairs held in memory as two tensors.

    Args:
        x: Images, float32 of shape (N, C, H, W) with values in [0, 1].
        labels: Class indices, int64 of shape (N,). `None` gives an unlabelled dataset whose
            labels are all 0 and whose `num_classes` is `None`.
        class_names: Name of each class, index-aligned with the labels.
        num_classes: Number of classes; defaults to `len(class_names)` when names are given.
        factors: Optional ground-truth factors of variation, float32 of shape (N, F), e.g. the
            `shapes` dataset's shape, scale, orientation and position values.
        factor_classes: Optional int64 (N, F) index of each factor value in its grid.
        factor_names: Names of the F factors.
        binarize: `None` for grey levels; `"static"` when `x` was binarized once (it holds
            0s and 1s); `"dynamic"` when `x` holds grey levels and `__getitem__` returns a fresh
            Bernoulli sample each time. A trainer reading `x` directly must then call
            `dynamic_binarize` on every batch itself.
        name: Name of the data set and split, for messages and model cards.
        validate: Check dtypes, shapes and the value range (one pass over `x`).

    Attributes:
        x: (N, C, H, W) float32 images in [0, 1].
        labels: (N,) int64 class indices.

    Example:
        >>> import torch
        >>> ds = TensorImageDataset(torch.rand(10, 1, 8, 8), torch.arange(10) % 2, num_classes=2)
        >>> x, y = ds[3]
        >>> x.shape, int(y), ds.input_shape
        (torch.Size([1, 8, 8]), 1, (1, 8, 8))
    """

    def __init__(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        factors: Tensor | None = None,
        factor_classes: Tensor | None = None,
        factor_names: Sequence[str] | None = None,
        binarize: BinarizeMode | None = None,
        name: str | None = None,
        validate: bool = True,
    ) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected x as a tensor of shape (N, C, H, W), got {got}")
        if x.dtype != torch.float32:
            raise TypeError(
                f"expected x of dtype float32 with values in [0, 1], got {x.dtype}; "
                "convert uint8 images with x.float() / 255"
            )
        n = x.shape[0]
        if class_names is not None:
            class_names = tuple(class_names)
            if num_classes is None:
                num_classes = len(class_names)
            elif num_classes != len(class_names):
                raise ValueError(
                    f"num_classes={num_classes} disagrees with {len(class_names)} class_names"
                )
        if labels is None:
            labels = torch.zeros(n, dtype=torch.int64, device=x.device)
        if not isinstance(labels, Tensor) or labels.shape != (n,):
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"expected labels of shape ({n},) to match x, got {got}")
        if labels.dtype != torch.int64:
            raise TypeError(f"expected int64 labels, got {labels.dtype}; use labels.long()")
        if binarize is not None and binarize not in _BINARIZE_MODES:
            raise ValueError(f"binarize must be None, 'static' or 'dynamic', got {binarize!r}")
        self._check_factors(n, factors, factor_classes, factor_names)
        if validate and n > 0:
            lo, hi = torch.aminmax(x)
            if not (lo.item() >= 0.0 and hi.item() <= 1.0):
                raise ValueError(
                    f"expected x with values in [0, 1], got min {lo.item()} and max {hi.item()}; "
                    "rescale it (e.g. x / 255) and replace NaNs"
                )
            if binarize == "static" and not bool(((x == 0) | (x == 1)).all()):
                raise ValueError("binarize='static' needs x of 0s and 1s; use static_binarize(x)")
            if num_classes is not None:
                lo_y, hi_y = torch.aminmax(labels)
                if lo_y.item() < 0 or hi_y.item() >= num_classes:
                    raise ValueError(
                        f"labels must lie in [0, {num_classes}), got [{lo_y.item()}, {hi_y.item()}]"
                    )
        self.x = x
        self.labels = labels
        self.class_names: tuple[str, ...] | None = class_names
        self.num_classes = num_classes
        self.factors = factors
        self.factor_classes = factor_classes
        self.factor_names: tuple[str, ...] | None = (
            tuple(factor_names) if factor_names is not None else None
        )
        self.binarize: BinarizeMode | None = binarize
        self.name = name

    @staticmethod
    def _check_factors(
        n: int,
        factors: Tensor | None,
        factor_classes: Tensor | None,
        factor_names: Sequence[str] | None,
    ) -> None:
        for arg_name, t in (("factors", factors), ("factor_classes", factor_classes)):
            if t is None:
                continue
            if t.dim() != 2 or t.shape[0] != n:
                raise ValueError(f"expected {arg_name} of shape ({n}, F), got {tuple(t.shape)}")
            if factor_names is not None and t.shape[1] != len(factor_names):
                raise ValueError(
                    f"{arg_name} has {t.shape[1]} columns but {len(factor_names)} factor_names"
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, as a model's `input_shape` expects."""
        c, h, w = self.x.shape[1:]
        return (c, h, w)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """Returns `(x, label)`: a (C, H, W) float32 image and a 0-dim int64 label."""
        x = self.x[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x)
        return x, self.labels[index]

    def subset(self, indices: Tensor | Sequence[int]) -> TensorImageDataset:
        """A new dataset with the given rows (copied), keeping names and factors.

        Args:
            indices: int64 (M,) row indices.
        """
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.x.device)
        return TensorImageDataset(
            self.x[idx],
            self.labels[idx],
            class_names=self.class_names,
            num_classes=self.num_classes,
            factors=None if self.factors is None else self.factors[idx],
            factor_classes=None if self.factor_classes is None else self.factor_classes[idx],
            factor_names=self.factor_names,
            binarize=self.binarize,
            name=self.name,
            validate=False,
        )

    def __repr__(self) -> str:
        parts = [f"{len(self)} images of shape {self.input_shape}"]
        if self.num_classes is not None:
            parts.append(f"num_classes={self.num_classes}")
        if self.factor_names is not None:
            parts.append(f"factors={self.factor_names}")
        if self.binarize is not None:
            parts.append(f"binarize={self.binarize!r}")
        name = f"{self.name!r}, " if self.name else ""
        return f"TensorImageDataset({name}{', '.join(parts)})"


def dynamic_binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draws binary images with `P(pixel = 1) = grey level`, on x's device and dtype.

    Call it on every training batch for dynamically binarized Bernoulli experiments: each
    epoch then sees a fresh binarization.

    Args:
        x: Grey levels in [0, 1], any shape, floating point.
        generator: Optional `torch.Generator` on x's device, for reproducible draws.

    Returns:
        A tensor like `x` holding 0s and 1s.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> dynamic_binarize(torch.full((2, 1, 4, 4), 0.3), generator=g).unique().tolist()
        [0.0, 1.0]
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"expected a floating-point tensor of grey levels in [0, 1], got {got}")
    return torch.bernoulli(x, generator=generator)


def static_binarize(x: Tensor, seed: int = 0) -> Tensor:
    """Binarizes x once with a seeded Bernoulli draw (the usual fixed binarized test set).

    The same `seed` and `x` give the same result every time on the same device.

    Args:
        x: Grey levels in [0, 1], any shape, floating point.
        seed: Seed of the draw.

    Returns:
        A new tensor like `x` holding 0s and 1s.
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return dynamic_binarize(x, generator=generator)
