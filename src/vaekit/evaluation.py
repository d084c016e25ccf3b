"""Evaluating a trained VAE: ELBO, importance-sampled log-likelihood, bits/dim, KL per
dimension and active units, over a whole data set.

    >>> import torch, vaekit
    >>> model = vaekit.MLPVAE(input_shape=(1, 8, 8), latent_dim=4, hidden_dims=(32,))
    >>> x = torch.bernoulli(torch.rand(20, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    >>> metrics = vaekit.evaluate(model, x, num_samples=50, progress=False)
    >>> sorted(metrics)  # doctest: +NORMALIZE_WHITESPACE
    ['active_dims', 'active_units', 'bits_per_dim', 'elbo', 'kl', 'kl_per_dim', 'log_px',
     'nll', 'num_examples', 'num_samples']

All log-likelihoods are in nats per example, averaged over the data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vaekit.likelihoods import BernoulliLikelihood, DiscretizedLogisticLikelihood
from vaekit.models.base import VAE
from vaekit.objectives import kl_per_dim
from vaekit.training.device import resolve_device

__all__ = ["ACTIVE_UNIT_THRESHOLD", "eval_mode", "evaluate", "iter_batches"]

logger = logging.getLogger(__name__)

#: A latent dimension u is active when Cov_x(E_q(z|x)[z_u]) exceeds this (Burda et al., 2016).
ACTIVE_UNIT_THRESHOLD = 0.01

_DEFAULT_BATCH_SIZE = 128


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts every submodule in eval mode and restores each one's own mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _on_device(model: nn.Module, device: torch.device, current: torch.device) -> Iterator[None]:
    """Moves the model to ``device`` for the block (if it is elsewhere) and back afterwards."""
    if device == current:
        yield
        return
    model.to(device)
    try:
        yield
    finally:
        model.to(current)


def _resolve_device(device: str | torch.device | None, model: VAE) -> torch.device:
    """``None`` is the model's device; ``"cuda"`` the model's own cuda device if it is on one;
    ``"auto"`` and device names as in :func:`vaekit.hub.load_pretrained`."""
    if device is None:
        return model.device
    resolved = resolve_device(device)
    if resolved.index is None and resolved.type == model.device.type:
        return model.device
    return resolved


def _split(batch: Any) -> tuple[Tensor, Tensor | None]:
    """A batch as ``(x, labels or None)``; accepts ``x``, ``(x,)`` or ``(x, label, ...)``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        if len(batch) == 1:  # e.g. TensorDataset(x)
            return batch[0], None
        labels = batch[1]
        return batch[0], labels if isinstance(labels, Tensor) else torch.as_tensor(labels)
    raise TypeError(
        "expected the data to yield tensors x or (x, label) pairs, got a batch of type "
        f"{type(batch).__name__}; wrap your data in a Dataset that returns one of these"
    )


def iter_batches(
    data: Tensor | Dataset | DataLoader, batch_size: int | None
) -> tuple[Iterable[tuple[Tensor, Tensor | None]], int | None]:
    """Batches ``(x, labels or None)`` of a tensor, map-style Dataset or DataLoader, in order.

    Args:
        data: a tensor ``(N, *input_shape)``, a map-style ``Dataset`` or a ``DataLoader``
            yielding tensors or ``(x, label)`` pairs.
        batch_size: batch size for tensors and datasets (default 128); must be ``None`` for
            a ``DataLoader``, which has its own.

    Returns:
        The batches, and the number of examples when it is known up front.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if isinstance(data, DataLoader):
        if batch_size is not None:
            raise ValueError(
                "batch_size was given but the data is a DataLoader, which sets its own batch "
                "size; pass batch_size=None or pass the Dataset instead of the DataLoader"
            )
        sized = hasattr(data.dataset, "__len__")
        return (_split(b) for b in data), len(data.dataset) if sized else None  # type: ignore[arg-type]
    bs = batch_size or _DEFAULT_BATCH_SIZE
    if isinstance(data, Tensor):
        if data.dim() == 0:
            raise ValueError("expected data of shape (N, *input_shape), got a 0-dim tensor")
        return ((x, None) for x in data.split(bs)), data.shape[0]
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        loader = DataLoader(data, batch_size=bs, shuffle=False)
        return (_split(b) for b in loader), len(data)  # type: ignore[arg-type]
    raise TypeError(
        "expected data as a Tensor (N, *input_shape), a map-style Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )


def _reports_bin_masses(model: VAE, data_is_binary: bool) -> bool:
    """Whether p(x) is a probability mass function on the data, so that bits/dim is proper."""
    if isinstance(model.likelihood, DiscretizedLogisticLikelihood):
        return True  # validate_target keeps the data on its grid of bins
    return isinstance(model.likelihood, BernoulliLikelihood) and data_is_binary


def evaluate(
    model: VAE,
    data: Tensor | Dataset | DataLoader,
    num_samples: int = 1000,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    max_memory_elements: int | None = None,
) -> dict[str, Any]:
    """Evaluates a VAE on a data set: ELBO terms, importance-sampled NLL, bits/dim, KL per
    latent dimension and active units.

    The model is run in eval mode under ``torch.inference_mode`` (each submodule's mode is
    restored afterwards). All randomness comes from one ``torch.Generator`` seeded with
    ``seed`` on the evaluation device, so a call is repeatable for a given seed, batching,
    ``max_memory_elements`` and device. (A dataset that draws random numbers itself, such as
    dynamic binarisation, must be made repeatable by the caller.)

    Args:
        model: the VAE. Conditional models (``num_classes`` set) get the data's labels as ``y``;
            unconditional ones ignore labels.
        data: a tensor ``(N, *input_shape)``, a map-style ``Dataset`` or a ``DataLoader``
            yielding tensors or ``(x, label)`` pairs (labels are needed for conditional models:
            wrap tensors as ``TensorDataset(x, y)``).
        num_samples: K, importance samples per example for ``nll``.
        batch_size: examples per batch for tensors and datasets (default 128); ``None`` for a
            ``DataLoader``, whose own batch size is used.
        seed: seed of the generator for the latent samples.
        device: where to compute: ``None`` (the model's device), ``"auto"`` (an accelerator
            if there is one) or a device such as ``"cuda:0"``. The model is moved there for
            the call and moved back afterwards.
        progress: show a tqdm bar; ``None`` shows it only when writing to a terminal.
        max_memory_elements: at most this many decoder output elements (``samples * batch *
            prod(input_shape) * params_per_element``) at once, through the ``chunk_size`` of
            :meth:`VAE.log_likelihood`; ``None`` keeps its default (about 2**24). Peak memory is
            a small multiple of 4 bytes times this.

    Returns:
        A dict of plain Python numbers (JSON-able), averaged over the examples:

        - ``elbo``: ``log_px - kl``, nats per example (one latent sample per example).
        - ``log_px``: the reconstruction term E_q[log p(x|z)], nats.
        - ``kl``: KL(q(z|x) || p(z)), closed form, nats.
        - ``nll``: ``-log p(x)`` estimated with K importance samples (Burda et al., 2016), nats;
          an upper bound on the true NLL in expectation that tightens as K grows.
        - ``num_samples``: K.
        - ``bits_per_dim``: ``nll / (D ln 2)`` with ``D = prod(input_shape)``, or ``None`` where
          that is not a code length. It is reported only where p(x|z) assigns probability
          masses to the data: the ``discretized_logistic`` likelihood (8-bit bins) and
          ``bernoulli`` on data that is exactly binary (bits per binary pixel). Continuous
          densities (``gaussian``, ``laplace``, ``continuous_bernoulli``) and Bernoulli on
          grey levels give ``None``: their ``nll`` is a density, not a mass, and can be made
          arbitrarily small on 8-bit data. For a density model evaluated on uniformly
          dequantised 8-bit data ``(k + u) / 256``, the usual figure is
          ``(nll + D * ln 256) / (D * ln 2)``; compute it yourself only in that setting.
        - ``kl_per_dim``: list of ``latent_dim`` floats, the KL of each latent dimension,
          nats; they sum to ``kl``.
        - ``active_units``: number of dimensions u with ``Var_x(E_q(z|x)[z_u]) > 0.01``
          (Burda et al., 2016); 0 for a single example.
        - ``active_dims``: the indices of those dimensions, a list of ints.
        - ``num_examples``: N.

    Raises:
        ValueError: for empty data, data of the wrong shape or outside the likelihood's
            support, missing labels for a conditional model, or bad arguments.
        TypeError: for data of an unsupported type.

    Example:
        >>> metrics = vaekit.evaluate(model, test_data, num_samples=1000)  # doctest: +SKIP
        >>> metrics["nll"], metrics["active_units"]  # doctest: +SKIP
    """
    if not isinstance(model, VAE):
        raise TypeError(f"expected a vaekit.VAE model, got {type(model).__name__}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if max_memory_elements is not None and (
        isinstance(max_memory_elements, bool)
        or not isinstance(max_memory_elements, int)
        or max_memory_elements < 1
    ):
        raise ValueError(
            f"max_memory_elements must be a positive integer or None, got {max_memory_elements!r}"
        )
    batches, total = iter_batches(data, batch_size)
    if total == 0:
        raise ValueError("the data is empty: evaluate needs at least one example")
    target = _resolve_device(device, model)
    elements_per_example = math.prod(model.input_shape) * model.likelihood.params_per_element
    conditional = model.num_classes is not None
    check_binary = isinstance(model.likelihood, BernoulliLikelihood)

    n = 0
    sums = torch.zeros(3, dtype=torch.float64, device=target)  # log_px, kl, nll
    kl_dims = torch.zeros(model.latent_dim, dtype=torch.float64, device=target)
    mean_z = torch.zeros(model.latent_dim, dtype=torch.float64, device=target)
    m2_z = torch.zeros_like(mean_z)  # sum of squared deviations of E_q[z], Chan et al. merge
    data_is_binary = True

    bar = tqdm(
        total=total, desc="evaluate", unit="ex", disable=None if progress is None else not progress
    )
    with (
        _on_device(model, target, model.device),
        eval_mode(model),
        torch.inference_mode(),
        bar,
    ):
        generator = torch.Generator(device=target).manual_seed(seed)
        pz = model.prior()
        for x, labels in batches:
            x = x.to(target)
            y = None
            if conditional:
                if labels is None:
                    raise ValueError(
                        f"this conditional model (num_classes={model.num_classes}) needs "
                        "labels: pass a Dataset or DataLoader yielding (x, label) pairs, "
                        "e.g. torch.utils.data.TensorDataset(x, y)"
                    )
                y = labels.to(target)
            if x.dim() and x.shape[0] == 0:
                continue
            qz = model.encode(x, y)  # validates x and y
            batch = x.shape[0]
            loc, scale = qz.base_dist.loc, qz.base_dist.scale  # type: ignore[attr-defined]
            eps = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
            log_px = model.decode(loc + scale * eps, y).log_prob(x)  # (B,)
            kl_dims_batch = kl_per_dim(qz, pz)  # (B, D), closed form
            chunk = None
            if max_memory_elements is not None:
                chunk = max(
                    1, min(num_samples, max_memory_elements // (batch * elements_per_example))
                )
            log_p = model.log_likelihood(
                x, y, num_samples=num_samples, chunk_size=chunk, generator=generator
            )  # (B,)
            terms = torch.stack([log_px, kl_dims_batch.sum(-1), -log_p]).double()  # (3, B)
            sums += terms.sum(1)
            kl_dims += kl_dims_batch.double().sum(0)
            if check_binary and data_is_binary:
                data_is_binary = bool(((x == 0) | (x == 1)).all())
            # Running variance of the posterior means (Chan, Golub & LeVeque's parallel merge).
            means = loc.double()  # (B, D)
            batch_mean = means.mean(0)
            delta = batch_mean - mean_z
            merged = n + batch
            mean_z += delta * (batch / merged)
            m2_z += ((means - batch_mean) ** 2).sum(0) + delta**2 * (n * batch / merged)
            n = merged
            bar.update(batch)
            if not bar.disable:
                bar.set_postfix(nll=f"{sums[2].item() / n:.2f}")
    if n == 0:
        raise ValueError("the data is empty: evaluate needs at least one example")

    log_px_mean, kl_mean, nll = (sums / n).tolist()
    elbo = log_px_mean - kl_mean
    variance = m2_z / (n - 1) if n > 1 else torch.zeros_like(m2_z)
    num_dims = math.prod(model.input_shape)
    active = torch.nonzero(variance > ACTIVE_UNIT_THRESHOLD).flatten().tolist()
    metrics: dict[str, Any] = {
        "elbo": elbo,
        "log_px": log_px_mean,
        "kl": kl_mean,
        "nll": nll,
        "num_samples": num_samples,
        "bits_per_dim": (
            nll / (num_dims * math.log(2)) if _reports_bin_masses(model, data_is_binary) else None
        ),
        "kl_per_dim": (kl_dims / n).tolist(),
        "active_units": len(active),
        "active_dims": active,
        "num_examples": n,
    }
    logger.info(
        "evaluated %d examples: elbo %.4f, nll %.4f nats (K=%d), %d active units",
        n,
        elbo,
        nll,
        num_samples,
        metrics["active_units"],
    )
    return metrics
