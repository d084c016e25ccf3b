"""The procedural `shapes` dataset: dSprites-like 2-D sprites with known factors.

Every image shows one white sprite (square, ellipse or heart) on black, on a full grid of
scale x orientation x x-position x y-position. Images are rendered from signed distance
functions on a pixel grid, vectorised with torch, so the default set (13,824 images of
64x64) builds in a few seconds with no files and no download.

Coordinates: pixel centres span (-1, 1) along each axis, x to the right, y downwards (row
order), so `pos_x = 0` puts the sprite at the left and `pos_y = 0` at the top.
"""

from __future__ import annotations

import math
import os

import torch
from einops import rearrange
from torch import Tensor

from vaekit.data.dataset import TensorImageDataset

__all__ = ["FACTOR_NAMES", "SHAPE_NAMES", "load_shapes", "render_shapes", "shapes_factor_grid"]

SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")

# Radius of the circle that holds any sprite of scale 1 (half the image width is 1).
_BOUNDING_RADIUS = 0.4
_MIN_SCALE, _MAX_SCALE = 0.5, 1.0


def shapes_factor_grid(
    num_scales: int = 4, num_rotations: int = 8, num_positions: int = 12
) -> tuple[Tensor, Tensor]:
    """Every combination of the five factors, in dSprites order (shape slowest, pos_y fastest).

    Scales are evenly spaced in [0.5, 1], orientations in [0, 2*pi) (radians, endpoint left
    out), positions in [0, 1].

    Returns:
        factors: float32 (N, 5) values of (shape, scale, orientation, pos_x, pos_y), with
            N = 3 * num_scales * num_rotations * num_positions**2.
        factor_classes: int64 (N, 5) index of each value in its factor's grid.
    """
    sizes = (len(SHAPE_NAMES), num_scales, num_rotations, num_positions, num_positions)
    for arg, value in zip(("num_scales", "num_rotations", "num_positions"), sizes[1:4]):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    grids = [
        torch.arange(len(SHAPE_NAMES), dtype=torch.float32),
        torch.linspace(_MIN_SCALE, _MAX_SCALE, num_scales) if num_scales > 1 else torch.ones(1),
        torch.arange(num_rotations, dtype=torch.float32) * (2 * math.pi / num_rotations),
        torch.linspace(0.0, 1.0, num_positions) if num_positions > 1 else torch.full((1,), 0.5),
        torch.linspace(0.0, 1.0, num_positions) if num_positions > 1 else torch.full((1,), 0.5),
    ]
    classes = torch.cartesian_prod(*[torch.arange(s) for s in sizes])  # (N, 5)
    factors = torch.stack([grid[classes[:, j]] for j, grid in enumerate(grids)], dim=1)
    return factors, classes


def render_shapes(factors: Tensor, image_size: int = 64, antialias: bool = True) -> Tensor:
    """Renders one sprite per row of factors.

    Args:
        factors: (N, 5) values of (shape index, scale, orientation in radians, pos_x in [0, 1],
            pos_y in [0, 1]), as from `shapes_factor_grid`. Any scale in (0, 1] fits inside
            the image at every position.
        image_size: Height and width in pixels.
        antialias: Grey edges from each pixel's coverage (else a hard 0/1 threshold).

    Returns:
        float32 (N, 1, image_size, image_size) images in [0, 1], on factors' device.
    """
    if factors.dim() != 2 or factors.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"expected factors of shape (N, 5), got {tuple(factors.shape)}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int of at least 8, got {image_size!r}")
    images = torch.zeros(
        factors.shape[0], 1, image_size, image_size, device=factors.device, dtype=torch.float32
    )
    pixel = 2.0 / image_size
    columns = torch.arange(image_size, device=factors.device, dtype=torch.float32)
    coords = (columns + 0.5) * pixel - 1  # pixel centres in (-1, 1)
    u = rearrange(coords, "w -> 1 1 w")  # x, across columns
    v = rearrange(coords, "h -> 1 h 1")  # y, down rows
    # Keep the largest sprite one pixel inside the border at the extreme positions.
    travel = 1.0 - _BOUNDING_RADIUS * _MAX_SCALE - pixel
    chunk = max(1, 2**22 // image_size**2)  # about 16 MB per temporary
    shape_index = factors[:, 0].round().long()
    for index, sdf_fn in enumerate((_sdf_square, _sdf_ellipse, _sdf_heart)):
        rows = (shape_index == index).nonzero().squeeze(1)
        for start in range(0, rows.shape[0], chunk):
            r = rows[start : start + chunk]
            f = factors[r].float()
            scale = rearrange(f[:, 1], "b -> b 1 1")
            cos = rearrange(torch.cos(f[:, 2]), "b -> b 1 1")
            sin = rearrange(torch.sin(f[:, 2]), "b -> b 1 1")
            dx = u - rearrange((2 * f[:, 3] - 1) * travel, "b -> b 1 1")  # (b, 1, w)
            dy = v - rearrange((2 * f[:, 4] - 1) * travel, "b -> b 1 1")  # (b, h, 1)
            # Sprite frame: undo the translation and rotation, then the scale.
            qx = (cos * dx + sin * dy) / scale  # (b, h, w)
            qy = (cos * dy - sin * dx) / scale
            sdf = sdf_fn(qx, qy) * scale
            if antialias:
                coverage = (0.5 - sdf / pixel).clamp(0.0, 1.0)
            else:
                coverage = (sdf <= 0).to(images.dtype)
            images[r, 0] = coverage
    return images


def _sdf_square(qx: Tensor, qy: Tensor) -> Tensor:
    half_side = _BOUNDING_RADIUS / math.sqrt(2)
    wx, wy = qx.abs() - half_side, qy.abs() - half_side
    outside = torch.hypot(wx.clamp(min=0), wy.clamp(min=0))
    return outside + torch.maximum(wx, wy).clamp(max=0)


def _sdf_ellipse(qx: Tensor, qy: Tensor) -> Tensor:
    # First-order distance to the ellipse (x/a)^2 + (y/b)^2 = 1: f / |grad f| with f = k0 - 1.
    a, b = _BOUNDING_RADIUS, _BOUNDING_RADIUS / 2
    k0 = torch.hypot(qx / a, qy / b)
    k1 = torch.hypot(qx / a**2, qy / b**2)
    deep_inside = torch.full_like(qx, -b)  # the centre, where the gradient vanishes
    return torch.where(k1 > 1e-6, k0 * (k0 - 1) / k1.clamp(min=1e-6), deep_inside)


def _sdf_heart(qx: Tensor, qy: Tensor) -> Tensor:
    # Inigo Quilez's exact heart SDF. His heart has its tip at (0, 0), points up the y axis
    # and fits in a circle of radius sqrt(2)/2 around (0, 0.5): scale it to the bounding
    # radius, centre it, and flip y so the tip points down the image.
    k = _BOUNDING_RADIUS / (math.sqrt(2) / 2)
    px = (qx / k).abs()
    py = 0.5 - qy / k
    lobe = torch.hypot(px - 0.25, py - 0.75) - math.sqrt(2) / 4
    t = 0.5 * (px + py).clamp(min=0)
    to_tip = (px**2 + (py - 1) ** 2).minimum((px - t) ** 2 + (py - t) ** 2)
    lower = to_tip.sqrt() * torch.sign(px - py)
    return torch.where(px + py > 1, lobe, lower) * k


def load_shapes(
    *,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: int = 64,
    num_scales: int = 4,
    num_rotations: int = 8,
    num_positions: int = 12,
    seed: int = 0,
    test_size: float = 0.1,
    antialias: bool = True,
) -> TensorImageDataset:
    """The `shapes` dataset: a seeded train/test split of the full factor grid.

    `root` and `download` are accepted for a uniform signature and ignored. The test split
    is a random `test_size` fraction of the grid drawn with `seed`; both splits keep grid
    order. The label is the shape index (0 square, 1 ellipse, 2 heart), and the ground truth
    is in `dataset.factors` / `dataset.factor_classes` with `dataset.factor_names`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"shapes serves 'train' and 'test', got {split!r}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size!r}")
    factors, classes = shapes_factor_grid(num_scales, num_rotations, num_positions)
    n = factors.shape[0]
    n_test = max(1, round(test_size * n))
    if n_test >= n:
        raise ValueError(f"test_size={test_size} leaves no training image out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    indices = (perm[:n_test] if split == "test" else perm[n_test:]).sort().values
    factors, classes = factors[indices], classes[indices]
    return TensorImageDataset(
        render_shapes(factors, image_size=image_size, antialias=antialias),
        classes[:, 0].clone(),
        class_names=SHAPE_NAMES,
        factors=factors,
        factor_classes=classes,
        factor_names=FACTOR_NAMES,
        name=f"shapes:{split}",
        validate=False,
    )
