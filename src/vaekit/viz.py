"""Pictures of a VAE: image grids of samples, reconstructions, interpolations, latent
traversals and the 2-D manifold, plus matplotlib plots of the latent space and loss curves.

Image functions return tensors in [0, 1] on the model's device; write them with
:func:`save_image` (torchvision's PNG writer). Plots return a ``matplotlib.figure.Figure``
built without pyplot, so they need no display, change no global state and leave nothing
open; matplotlib is an optional extra (``pip install vaekit[plots]``).

    >>> import torch, vaekit
    >>> from vaekit import viz
    >>> model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=2, hidden_dims=(64,))
    >>> viz.sample_grid(model, n=16, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 122, 122])
    >>> viz.interpolate(model, torch.rand(1, 28, 28), torch.rand(1, 28, 28), steps=5).shape
    torch.Size([5, 1, 28, 28])

Every function runs under ``torch.no_grad`` with the model in eval mode, and restores each
submodule's mode afterwards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision.utils
from einops import rearrange, repeat
from torch import Tensor
from torch.distributions import Normal
from torch.utils.data import DataLoader, Dataset

from vaekit.evaluation import eval_mode, iter_batches
from vaekit.models.base import VAE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "image_grid",
    "interpolate",
    "latent_scatter",
    "loss_curve",
    "manifold_grid",
    "reconstruction_grid",
    "sample_grid",
    "save_image",
    "slerp",
    "traverse",
]

_PAD_VALUE = 1.0  # white lines between tiles: most built-in datasets have dark backgrounds
_MAX_CLASSES_IN_LEGEND = 20


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _require_images(model: VAE, what: str) -> None:
    if len(model.input_shape) != 3:
        raise ValueError(
            f"{what} draws images, but this model's input_shape is {model.input_shape}; it needs "
            "(C, H, W). For vector data reshape the decoded tensors yourself, e.g. "
            "image_grid(model.sample(64).reshape(-1, 1, 28, 28))"
        )


def _one_example(model: VAE, x: Tensor, name: str) -> Tensor:
    """``x`` of shape ``input_shape`` or ``(1, *input_shape)`` as ``(1, *input_shape)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) == tuple(model.input_shape):
        x = x.unsqueeze(0)
    if tuple(x.shape) != (1, *model.input_shape):
        raise ValueError(
            f"expected {name} to be one example of shape {model.input_shape} (or "
            f"(1, {', '.join(map(str, model.input_shape))})), got {tuple(x.shape)}"
        )
    return x.to(model.device)


def _labels(model: VAE, y: Tensor | int | None, n: int) -> Tensor | None:
    """One label (int or 1-element tensor) or ``n`` labels, as a LongTensor ``(n,)``."""
    if y is None or model.num_classes is None:
        if y is not None:
            raise ValueError(
                "this model is not conditional but labels y were given; call without y"
            )
        return None
    if isinstance(y, int) and not isinstance(y, bool):
        return torch.full((n,), y, dtype=torch.long, device=model.device)
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be an int class index or a LongTensor, got {type(y).__name__}")
    y = y.to(model.device)
    if y.numel() == 1:
        return y.reshape(1).expand(n)
    if y.shape != (n,):
        raise ValueError(f"expected one label or labels of shape ({n},), got {tuple(y.shape)}")
    return y


def _decode_mean(model: VAE, z: Tensor, y: Tensor | None) -> Tensor:
    """The mean of p(x|z) for ``(N, latent_dim)`` codes, in the model's dtype."""
    return model.decode(z.to(model.dtype), y).mean.to(model.dtype)


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "vaekit's plots need matplotlib; install it with: pip install vaekit[plots]"
        ) from err
    return Figure


def _save_figure(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------------
# Image grids
# --------------------------------------------------------------------------------------------


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 2) -> Tensor:
    """Tiles images into one image with torchvision's ``make_grid``, values clamped to [0, 1].

    Args:
        images: ``(N, C, H, W)``, or ``(R, S, C, H, W)`` for R rows of S images (as returned
            by :func:`traverse`).
        nrow: images per row; default ``S`` for 5-D input, else ``ceil(sqrt(N))``.
        padding: pixels between tiles (drawn white).

    Returns:
        ``(C', H', W')`` in [0, 1] on the images' device; single-channel images come out with
        three identical channels (torchvision's convention).
    """
    if not isinstance(images, Tensor) or images.dim() not in (4, 5):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected images of shape (N, C, H, W) or (R, S, C, H, W), got {got}")
    if images.dim() == 5:
        nrow = nrow or images.shape[1]
        images = rearrange(images, "r s c h w -> (r s) c h w")
    if nrow is None:
        nrow = math.ceil(math.sqrt(images.shape[0]))
    return torchvision.utils.make_grid(
        images.detach().float().clamp(0, 1), nrow=nrow, padding=padding, pad_value=_PAD_VALUE
    )


def save_image(grid: Tensor, path: str | Path) -> Path:
    """Writes an image (``(C, H, W)`` in [0, 1]) or a batch ``(N, C, H, W)`` (tiled) to a PNG.

    The format follows the file's suffix (``.png`` recommended); parent folders are created.

    Returns:
        The path written.
    """
    if not isinstance(grid, Tensor) or grid.dim() not in (2, 3, 4):
        got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got {got}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grid.dim() == 4:
        grid = image_grid(grid)
    torchvision.utils.save_image(grid.detach().float().cpu(), path)
    return path


def sample_grid(
    model: VAE,
    n: int = 64,
    nrow: int | None = None,
    y: Tensor | int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A grid of ``n`` samples: the means of p(x|z) for z drawn from the prior.

    Args:
        model: a VAE on images ``(C, H, W)``.
        n: number of samples.
        nrow: samples per row (default ``ceil(sqrt(n))``).
        y: for conditional models, one class index for all or labels ``(n,)``.
        generator: ``torch.Generator`` for reproducible samples.

    Returns:
        ``(C', H', W')`` in [0, 1] on the model's device.
    """
    _require_images(model, "sample_grid")
    with eval_mode(model), torch.no_grad():
        x = model.sample(n, y=_labels(model, y, n), generator=generator)
    return image_grid(x, nrow=nrow)


def reconstruction_grid(
    model: VAE, x: Tensor, y: Tensor | None = None, n: int = 16, pairs_per_row: int = 8
) -> Tensor:
    """Inputs next to their reconstructions (the mean of p(x | z = E[q(z|x)])).

    Each input is followed on its right by its reconstruction; a row holds ``pairs_per_row``
    such pairs.

    Args:
        model: a VAE on images.
        x: a batch ``(B, *input_shape)``; the first ``n`` examples are shown.
        y: labels ``(B,)`` for conditional models.
        n: number of examples to show.
        pairs_per_row: input/reconstruction pairs per grid row.

    Returns:
        ``(C', H', W')`` in [0, 1] on the model's device.
    """
    _require_images(model, "reconstruction_grid")
    if not isinstance(x, Tensor) or x.dim() != len(model.input_shape) + 1 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"expected a non-empty batch x of shape (B, *{model.input_shape}), got {got}"
        )
    x = x[:n].to(model.device)
    y = None if y is None else y[:n].to(model.device)
    with eval_mode(model), torch.no_grad():
        x_rec = model.reconstruct(x, y)
    pairs = rearrange(torch.stack([x, x_rec.to(x.dtype)], 1), "n two c h w -> (n two) c h w")
    return image_grid(pairs, nrow=2 * min(pairs_per_row, x.shape[0]))


# --------------------------------------------------------------------------------------------
# Latent-space walks
# --------------------------------------------------------------------------------------------


def slerp(z_a: Tensor, z_b: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation between two vectors (Shoemake, 1985; White, 2016).

    Moves along the great circle through ``z_a`` and ``z_b`` with the angle computed stably
    (``2 atan2(|a - b|, |a + b|)`` on unit vectors, in float64), so near-parallel vectors are
    accurate; for exactly parallel, antiparallel or zero vectors it falls back to linear
    interpolation. For unit vectors every point has norm 1.

    Args:
        z_a: ``(D,)`` start, returned at ``t = 0``.
        z_b: ``(D,)`` end, returned at ``t = 1``.
        t: ``(T,)`` positions in [0, 1].

    Returns:
        ``(T, D)`` in ``z_a``'s dtype.
    """
    a, b = z_a.double(), z_b.double()
    t = t.to(a).unsqueeze(-1)  # (T, 1)
    norm_a, norm_b = a.norm(), b.norm()
    u_a = a / norm_a.clamp_min(1e-300)
    u_b = b / norm_b.clamp_min(1e-300)
    omega = 2 * torch.atan2((u_a - u_b).norm(), (u_a + u_b).norm())
    sin_omega = torch.sin(omega)
    degenerate = (sin_omega < 1e-12) | (norm_a == 0) | (norm_b == 0)
    safe = torch.where(degenerate, torch.ones_like(sin_omega), sin_omega)
    spherical = (torch.sin((1 - t) * omega) / safe) * a + (torch.sin(t * omega) / safe) * b
    return torch.where(degenerate, torch.lerp(a, b, t), spherical).to(z_a.dtype)


def interpolate(
    model: VAE,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 10,
    method: str = "lerp",
    y: Tensor | int | None = None,
) -> Tensor:
    """Decodes a straight (``"lerp"``) or spherical (``"slerp"``) path between two encodings.

    Both inputs are encoded to their posterior means; ``steps`` codes from one to the other
    (both ends included) are decoded to the means of p(x|z). The first and last outputs are
    the reconstructions of ``x_a`` and ``x_b``. Tile the result with :func:`image_grid`.

    Args:
        model: a VAE.
        x_a: the first example, of shape ``input_shape`` or ``(1, *input_shape)``.
        x_b: the second example, of the same shape.
        steps: number of points on the path (>= 2).
        method: ``"lerp"`` or ``"slerp"`` (see :func:`slerp`).
        y: for conditional models, the class index used for both ends and the decoding.

    Returns:
        ``(steps, *input_shape)`` on the model's device.
    """
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    x = torch.cat([_one_example(model, x_a, "x_a"), _one_example(model, x_b, "x_b")])
    with eval_mode(model), torch.no_grad():
        z_ends = model.encode(x, _labels(model, y, 2)).mean  # (2, D)
        t = torch.linspace(0, 1, steps, device=z_ends.device, dtype=z_ends.dtype)
        if method == "lerp":
            z = torch.lerp(z_ends[0], z_ends[1], t.unsqueeze(-1))  # (steps, D)
        else:
            z = slerp(z_ends[0], z_ends[1], t)
        return _decode_mean(model, z, _labels(model, y, steps))


def traverse(
    model: VAE,
    x: Tensor | None = None,
    dims: Sequence[int] | None = None,
    steps: int = 9,
    span: float = 3.0,
    y: Tensor | int | None = None,
) -> Tensor:
    """Latent traversals: varies one latent dimension at a time, the others held fixed.

    The code starts at the posterior mean of ``x`` (or the prior's mean, zero, without
    ``x``). For each dimension d in ``dims``, z_d takes ``steps`` values evenly spaced over
    the prior's ``loc ± span * scale`` (so [-3, 3] by default) while every other coordinate
    keeps its starting value.

    Args:
        model: a VAE.
        x: one example (``input_shape`` or ``(1, *input_shape)``), or ``None``.
        dims: latent dimensions to traverse (default: all).
        steps: values per dimension (>= 2).
        span: half-width of the range, in prior standard deviations.
        y: for conditional models, the class index.

    Returns:
        ``(len(dims), steps, *input_shape)`` means of p(x|z) on the model's device; tile them
        with ``image_grid(result)`` (one row per dimension).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    if not (isinstance(span, (int, float)) and span > 0 and math.isfinite(span)):
        raise ValueError(
            f"span must be a positive number of prior standard deviations, got {span!r}"
        )
    dims = list(range(model.latent_dim)) if dims is None else list(dims)
    bad = [
        d
        for d in dims
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < model.latent_dim
    ]
    if not dims or bad:
        raise ValueError(
            f"dims must be a non-empty list of integers in [0, {model.latent_dim}), got {dims!r}"
        )
    with eval_mode(model), torch.no_grad():
        pz = model.prior()
        prior_loc, prior_scale = pz.mean, pz.stddev  # (D,) each
        if x is None:
            z0 = prior_loc.clone()
        else:
            z0 = model.encode(_one_example(model, x, "x"), _labels(model, y, 1)).mean[0]
        offsets = torch.linspace(-span, span, steps, device=z0.device, dtype=z0.dtype)
        z = repeat(z0, "d -> r s d", r=len(dims), s=steps).clone()
        for row, d in enumerate(dims):
            z[row, :, d] = prior_loc[d] + prior_scale[d] * offsets
        flat = rearrange(z, "r s d -> (r s) d")
        x_mean = _decode_mean(model, flat, _labels(model, y, flat.shape[0]))
        return x_mean.unflatten(0, (len(dims), steps))


def manifold_grid(model: VAE, n: int = 20, y: Tensor | int | None = None) -> Tensor:
    """The learned 2-D manifold: decodes a grid of z over the prior's quantiles.

    z_1 runs left to right and z_2 bottom to top over the prior's inverse CDF at
    ``linspace(0.05, 0.95, n)`` (Kingma & Welling, 2014, figure 4), so equal areas of
    the grid hold equal prior mass.

    Args:
        model: a VAE on images with ``latent_dim == 2``.
        n: tiles per side (>= 2); an odd ``n`` puts z = 0 in the middle.
        y: for conditional models, the class index.

    Returns:
        ``(C', H', W')`` image grid in [0, 1] on the model's device.
    """
    if model.latent_dim != 2:
        raise ValueError(
            f"manifold_grid needs a 2-D latent space, but this model has latent_dim="
            f"{model.latent_dim}; use traverse() or latent_scatter() instead"
        )
    _require_images(model, "manifold_grid")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    with eval_mode(model), torch.no_grad():
        pz = model.prior()  # standard normal
        marginals = Normal(pz.mean, pz.stddev)  # batch shape (2,)
        p = torch.linspace(0.05, 0.95, n, device=pz.mean.device, dtype=pz.mean.dtype)
        q = marginals.icdf(p.unsqueeze(-1))  # (n, 2): quantiles of each dimension
        z1 = repeat(q[:, 0], "c -> r c", r=n)  # columns: z_1 increasing to the right
        z2 = repeat(q.flip(0)[:, 1], "r -> r c", c=n)  # rows: z_2 decreasing downwards
        z = rearrange(torch.stack([z1, z2], -1), "r c d -> (r c) d")
        x_mean = _decode_mean(model, z, _labels(model, y, n * n))
    return image_grid(x_mean, nrow=n)


# --------------------------------------------------------------------------------------------
# Plots (matplotlib)
# --------------------------------------------------------------------------------------------


def latent_scatter(
    model: VAE,
    data: Tensor | Dataset | DataLoader,
    labels: Tensor | Sequence[int] | None = None,
    max_points: int = 5000,
    path: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int | None = None,
    title: str | None = None,
) -> Figure:
    """Scatter plot of the posterior means E[q(z|x)], coloured by label.

    Two latent dimensions are plotted as they are; more are projected on their first two
    principal components (exact SVD of the centred means), with the share of variance each
    explains on the axes; one dimension is plotted against the label.

    Args:
        model: a VAE.
        data: a tensor ``(N, *input_shape)``, a Dataset or a DataLoader yielding tensors or
            ``(x, label)`` pairs. The first ``max_points`` examples are plotted.
        labels: ``(N,)`` labels for colouring, overriding the data's own.
        max_points: at most this many points.
        path: also save the figure there (PNG by suffix).
        class_names: legend names of the classes; taken from the dataset's ``class_names``
            attribute when not given.
        batch_size: batch size for tensors and datasets (default 128).
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure`` (not registered with pyplot: nothing to close).
    """
    figure_class = _figure_class()
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise ValueError(f"max_points must be a positive integer, got {max_points!r}")
    batches, _ = iter_batches(data, batch_size)
    if class_names is None:
        dataset = data.dataset if isinstance(data, DataLoader) else data
        class_names = getattr(dataset, "class_names", None)
    means, found = [], []
    count = 0
    with eval_mode(model), torch.no_grad():
        for x, lab in batches:
            take = min(x.shape[0], max_points - count)
            x = x[:take].to(model.device)
            lab = None if lab is None else lab[:take]
            y = (
                None
                if model.num_classes is None
                else (None if lab is None else lab.to(model.device))
            )
            means.append(model.encode(x, y).mean.double().cpu())
            if lab is not None:
                found.append(lab.cpu())
            count += take
            if count >= max_points:
                break
    if count == 0:
        raise ValueError("the data is empty: latent_scatter needs at least one example")
    m = torch.cat(means)  # (N, D)
    colour: Tensor | None
    if labels is not None:
        colour = torch.as_tensor(labels)[:count].cpu()
        if colour.shape != (count,):
            raise ValueError(
                f"expected labels of shape ({count},) (one per plotted example), got "
                f"{tuple(torch.as_tensor(labels).shape)}"
            )
    else:
        colour = torch.cat(found) if found and len(found) == len(means) else None

    if m.shape[1] == 1:
        xy = torch.cat([m, torch.zeros_like(m) if colour is None else colour[:, None].double()], 1)
        axis_labels = ("z1", "label" if colour is not None else "")
    elif m.shape[1] == 2:
        xy, axis_labels = m, ("z1", "z2")
    else:
        centred = m - m.mean(0)
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        xy = centred @ vh[:2].T  # (N, 2) principal-component scores
        share = (s**2 / (s**2).sum().clamp_min(1e-300))[:2].tolist()
        axis_labels = (f"PC1 ({share[0]:.0%} of variance)", f"PC2 ({share[1]:.0%} of variance)")

    fig = figure_class(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot()
    points = xy.numpy()
    if colour is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        classes = torch.unique(colour).tolist()
        if class_names is not None or len(classes) <= _MAX_CLASSES_IN_LEGEND:
            import matplotlib

            palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
            for i, c in enumerate(classes):
                sel = (colour == c).numpy()
                name = (
                    class_names[int(c)]
                    if class_names is not None and 0 <= int(c) < len(class_names)
                    else str(c)
                )
                ax.scatter(
                    points[sel, 0],
                    points[sel, 1],
                    s=4,
                    alpha=0.6,
                    color=palette(i % palette.N),
                    label=name,
                )
            ax.legend(markerscale=3, fontsize="small", loc="best", framealpha=0.8)
        else:
            sc = ax.scatter(
                points[:, 0], points[:, 1], s=4, alpha=0.6, c=colour.numpy(), cmap="viridis"
            )
            fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title or f"posterior means of {count} examples (latent_dim={m.shape[1]})")
    _save_figure(fig, path)
    return fig


def _read_history(
    history: str | Path | Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
) -> list[Mapping[str, Any]]:
    if isinstance(history, (str, Path)):
        records: list[Mapping[str, Any]] = []
        with open(history, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{history}, line {number}: not valid JSON ({err.msg})"
                    ) from None
                if isinstance(record, dict):
                    records.append(record)
        return records
    if isinstance(history, Mapping):
        # A dict of equal-length lists: {"train_loss": [...], "eval_loss": [...]}.
        length = max((len(v) for v in history.values()), default=0)
        return [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(length)]
    if isinstance(history, Sequence) and all(isinstance(r, Mapping) for r in history):
        return [r for r in history if isinstance(r, Mapping)]
    raise TypeError(
        "expected the history as a list of per-epoch dicts, a dict of lists or the path of a "
        f"metrics.jsonl file, got {type(history).__name__}"
    )


def loss_curve(
    history: str | Path | Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    path: str | Path | None = None,
    keys: Sequence[str] = ("train_loss", "eval_loss"),
    title: str | None = None,
) -> Figure:
    """Plots the training and evaluation loss per epoch.

    Args:
        history: the trainer's history (a list of dicts with ``"epoch"``, ``"train_loss"``,
            ``"eval_loss"``, ...), a dict of lists, or the path of a ``metrics.jsonl`` file
            (one JSON object per line). Records without a key are skipped for that curve;
            records without ``"epoch"`` are numbered 1, 2, ...
        path: also save the figure there (PNG by suffix).
        keys: which metrics to draw.
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure`` (not registered with pyplot: nothing to close).
    """
    figure_class = _figure_class()
    records = _read_history(history)
    fig = figure_class(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for key in keys:
        xs, ys = [], []
        for i, record in enumerate(records, 1):
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                xs.append(record.get("epoch", i))
                ys.append(value)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            drawn += 1
    if drawn == 0:
        found = sorted({k for r in records for k in r})
        raise ValueError(f"no values for {list(keys)} in the history; it has the keys {found}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per example)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    _save_figure(fig, path)
    return fig
