"""Pieces of the VAE objectives: KL terms, free bits, the IWAE bound and beta schedules.

All quantities are in nats. ``kl`` terms are per example (shape ``(B,)``) unless they say
``per_dim``.

    >>> from vaekit.objectives import LinearWarmup
    >>> schedule = LinearWarmup(warmup_steps=100)
    >>> schedule(0), schedule(50), schedule(1000)
    (0.0, 0.5, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, kl_divergence

__all__ = [
    "BetaSchedule",
    "ConstantBeta",
    "CyclicalBeta",
    "LinearWarmup",
    "free_bits_kl",
    "iwae_bound",
    "kl_per_dim",
    "make_beta_schedule",
]


def kl_per_dim(qz: Distribution, pz: Distribution) -> Tensor:
    """Closed-form KL(q(z|x) || p(z)) for each latent dimension, shape ``(B, D)``.

    Both distributions must be ``Independent`` over a factorised base (e.g. diagonal Normal).
    """
    if not (isinstance(qz, Independent) and isinstance(pz, Independent)):
        raise TypeError(
            "kl_per_dim needs Independent distributions over a factorised base, got "
            f"{type(qz).__name__} and {type(pz).__name__}"
        )
    return kl_divergence(qz.base_dist, pz.base_dist)


def free_bits_kl(kl_dims: Tensor, free_bits: float) -> Tensor:
    """KL with free bits (Kingma et al., 2016), per example, shape ``(B,)``.

    Each latent dimension's KL, averaged over the batch, is not penalised below
    ``free_bits`` nats: ``sum_d max(free_bits, mean_b KL_bd)``, spread back to examples so
    that the batch mean of the result is that sum. Gradients flow only through dimensions
    above the threshold, which keeps them from collapsing.

    Args:
        kl_dims: KL per example and dimension, shape ``(B, D)``.
        free_bits: nats per dimension (``lambda``); 0 gives the plain KL.
    """
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0 nats, got {free_bits}")
    if free_bits == 0:
        return kl_dims.sum(-1)
    batch_mean = kl_dims.mean(0, keepdim=True)  # (1, D)
    active = (batch_mean > free_bits).to(kl_dims.dtype)
    # Dimensions below the threshold contribute the constant free_bits (no gradient).
    return (kl_dims * active + free_bits * (1 - active)).sum(-1)


def iwae_bound(log_w: Tensor) -> Tensor:
    """The importance-weighted bound from log-weights of shape ``(K, B)``: ``(B,)`` nats.

    ``log_w = log p(x, z_k) - log q(z_k | x)``; the result is
    ``logsumexp_k log_w - log K``, a lower bound on ``log p(x)`` that tightens with K.
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


class BetaSchedule(Protocol):
    """Anything that maps the optimisation step to the KL weight beta."""

    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True)
class ConstantBeta:
    """beta fixed for the whole run."""

    beta: float = 1.0

    def __call__(self, step: int) -> float:
        return float(self.beta)


@dataclass(frozen=True)
class LinearWarmup:
    """KL warm-up: beta rises linearly from ``beta_min`` to ``beta_max`` over ``warmup_steps``."""

    warmup_steps: int
    beta_max: float = 1.0
    beta_min: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0 or step >= self.warmup_steps:
            return float(self.beta_max)
        frac = max(step, 0) / self.warmup_steps
        return float(self.beta_min + frac * (self.beta_max - self.beta_min))


@dataclass(frozen=True)
class CyclicalBeta:
    """Cyclical annealing (Fu et al., 2019): within each cycle of ``cycle_steps``, beta rises
    linearly from 0 to ``beta_max`` over the first ``ratio`` of the cycle, then stays there.
    After ``num_cycles`` cycles (if given), beta stays at ``beta_max``."""

    cycle_steps: int
    ratio: float = 0.5
    beta_max: float = 1.0
    num_cycles: int | None = None

    def __post_init__(self) -> None:
        if self.cycle_steps < 1:
            raise ValueError(f"cycle_steps must be >= 1, got {self.cycle_steps}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")

    def __call__(self, step: int) -> float:
        if self.num_cycles is not None and step >= self.num_cycles * self.cycle_steps:
            return float(self.beta_max)
        pos = (max(step, 0) % self.cycle_steps) / self.cycle_steps
        return float(self.beta_max * min(1.0, pos / self.ratio))


_SCHEDULES: dict[str, type] = {
    "constant": ConstantBeta,
    "linear": LinearWarmup,
    "cyclical": CyclicalBeta,
}


def make_beta_schedule(kind: str, **kwargs: Any) -> BetaSchedule:
    """Builds a beta schedule by name: ``"constant"``, ``"linear"`` or ``"cyclical"``."""
    if kind not in _SCHEDULES:
        raise ValueError(f"unknown beta schedule {kind!r}; valid kinds are {', '.join(_SCHEDULES)}")
    try:
        schedule: BetaSchedule = _SCHEDULES[kind](**kwargs)
    except TypeError as err:
        raise TypeError(f"invalid arguments for the {kind!r} beta schedule: {err}") from None
    return schedule
