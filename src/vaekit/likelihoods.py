"""Likelihoods p(x|z): modules that turn decoder output into a ``torch.distributions`` object.

A likelihood declares how many decoder outputs it needs per data channel
(``params_per_element``), owns its learned parameters (a learned Gaussian scale is saved with
the model) and always computes in float32, even under autocast. Models choose one by name, so
their config stays JSON:

    >>> import torch
    >>> from vaekit.likelihoods import get_likelihood_class
    >>> lik = get_likelihood_class("gaussian")(scale="learned")
    >>> h = torch.zeros(4, lik.params_per_element * 1, 8, 8)   # decoder output (B, k*C, H, W)
    >>> px = lik(h)
    >>> px.batch_shape, px.event_shape
    (torch.Size([4]), torch.Size([1, 8, 8]))

Register your own class with :func:`register_likelihood` to use it by name and still save and
load models that use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Laplace,
    Normal,
    constraints,
)

__all__ = [
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogisticLikelihood",
    "DiscretizedLogisticMixture",
    "GaussianLikelihood",
    "LaplaceLikelihood",
    "Likelihood",
    "get_likelihood_class",
    "list_likelihoods",
    "register_likelihood",
]

_MIN_SCALE = 1e-3


def at_least_float32(t: Tensor) -> Tensor:
    """Half-precision tensors go to float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class Likelihood(nn.Module):
    """Base class of p(x|z) families.

    Subclasses set ``params_per_element`` and implement :meth:`distribution`, which receives
    the decoder output in float32, split into ``params_per_element`` tensors of the data's
    shape ``(B, C, *spatial)``.
    """

    name: ClassVar[str] = ""
    params_per_element: int = 1

    def forward(self, h: Tensor, event_dims: int | None = None) -> Distribution:
        """Builds p(x|z) from decoder output.

        Args:
            h: decoder output of shape ``(*batch, params_per_element * C, *spatial)`` (or
                ``(*batch, params_per_element * D)`` for vector data), any float dtype.
            event_dims: number of data dimensions (``len(input_shape)``); by default all
                but the first, i.e. one batch dimension.

        Returns:
            A distribution with batch shape ``batch`` (usually ``(B,)``) and event shape
            ``(C, *spatial)``.
        """
        channel_dim = self._channel_dim(h, event_dims)
        device_type = h.device.type if h.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            base = self.elementwise(at_least_float32(h), channel_dim)
        return Independent(base, h.dim() - channel_dim)

    def elementwise(self, h: Tensor, channel_dim: int) -> Distribution:
        """Splits float32 decoder output along ``channel_dim`` into the parameters of
        :meth:`distribution` (override for another layout)."""
        return self.distribution(*h.chunk(self.params_per_element, dim=channel_dim))

    def _channel_dim(self, h: Tensor, event_dims: int | None) -> int:
        channel_dim = 1 if event_dims is None else h.dim() - event_dims
        if channel_dim < 1 or h.shape[channel_dim] % self.params_per_element:
            raise ValueError(
                f"{type(self).__name__} needs decoder output of shape "
                f"(B, {self.params_per_element}*C, ...), got {tuple(h.shape)}"
            )
        return channel_dim

    def distribution(self, *params: Tensor) -> Distribution:
        """Returns the element-wise distribution (batch shape ``(B, C, *spatial)``)."""
        raise NotImplementedError

    def validate_target(self, x: Tensor) -> None:
        """Raises ``ValueError`` when ``x`` lies outside this likelihood's support."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


_REGISTRY: dict[str, type[Likelihood]] = {}


def register_likelihood(name: str, cls: type[Likelihood]) -> type[Likelihood]:
    """Makes a likelihood class available by name (in model configs and saved models).

    Args:
        name: the name used in ``likelihood=...``; must not be taken by another class.
        cls: a subclass of :class:`Likelihood` whose constructor takes only keyword arguments
            that can be stored in JSON.

    Returns:
        ``cls``, so this also works as ``register_likelihood("name", MyLikelihood)`` at import.
    """
    if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
        raise TypeError(f"expected a subclass of vaekit.likelihoods.Likelihood, got {cls!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"likelihood name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(
            f"likelihood name {name!r} is already registered to {_REGISTRY[name].__qualname__}"
        )
    cls.name = name
    _REGISTRY[name] = cls
    return cls


def list_likelihoods() -> list[str]:
    """Names of the registered likelihoods, sorted."""
    return sorted(_REGISTRY)


def get_likelihood_class(name: str | type[Likelihood]) -> type[Likelihood]:
    """Looks a likelihood class up by name (a registered class is returned as is)."""
    if isinstance(name, type) and issubclass(name, Likelihood):
        if name.name not in _REGISTRY:
            raise ValueError(
                f"likelihood class {name.__qualname__} is not registered; call "
                "vaekit.register_likelihood('my_name', cls) so models using it can be saved"
            )
        return name
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown likelihood {name!r}; valid names are {', '.join(list_likelihoods())} "
            "(register your own with vaekit.register_likelihood)"
        )
    return _REGISTRY[name]


def _check_unit_interval(x: Tensor, what: str) -> None:
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{what} targets must lie in [0, 1], got values in "
            f"[{x.min().item():.4g}, {x.max().item():.4g}]; scale your data to [0, 1] "
            "(e.g. divide 8-bit images by 255) or choose likelihood='gaussian'"
        )


class _BernoulliLogits(Bernoulli):
    """Bernoulli whose ``log_prob`` is ``x * logits - softplus(logits)``: the same values as
    torch's binary cross-entropy form, about 1.5x faster, and broadcasting x against extra
    leading sample dimensions of the logits without copying it."""

    def log_prob(self, value: Tensor) -> Tensor:
        return value * self.logits - F.softplus(self.logits)


class BernoulliLikelihood(Likelihood):
    """Bernoulli p(x|z) from logits; grey-level targets in [0, 1] are allowed.

    For grey levels ``log_prob`` is minus the binary cross-entropy (not a normalised density:
    use ``continuous_bernoulli`` when that matters). The mean is ``sigmoid(logits)``.
    """

    params_per_element = 1

    def distribution(self, logits: Tensor) -> Distribution:  # type: ignore[override]
        return _BernoulliLogits(logits=logits, validate_args=False)

    def validate_target(self, x: Tensor) -> None:
        _check_unit_interval(x, "Bernoulli")


class _LocScaleLikelihood(Likelihood):
    """Shared scale handling of the Gaussian and Laplace likelihoods.

    Args:
        scale: ``"learned"`` (one learned scale for all elements, saved with the model),
            ``"fixed"`` (the constant ``sigma``) or ``"per_pixel"`` (the decoder predicts it).
        sigma: the fixed scale, or the initial value of the learned one.
        min_scale: lower bound on every scale, for numerical safety.
    """

    SCALE_MODES = ("learned", "fixed", "per_pixel")

    def __init__(self, scale: str = "learned", sigma: float = 1.0, min_scale: float = _MIN_SCALE):
        super().__init__()
        if scale not in self.SCALE_MODES:
            raise ValueError(f"scale must be one of {', '.join(self.SCALE_MODES)}, got {scale!r}")
        if not (isinstance(sigma, (int, float)) and sigma > min_scale and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number > {min_scale}, got {sigma!r}")
        self.scale_mode = scale
        self.min_scale = float(min_scale)
        self.sigma = float(sigma)
        self.params_per_element = 2 if scale == "per_pixel" else 1
        if scale == "learned":
            # Inverse softplus, so that the initial scale is exactly sigma.
            raw = math.log(math.expm1(self.sigma - self.min_scale))
            self.raw_scale = nn.Parameter(torch.tensor(raw))

    def scale_from(self, raw: Tensor | None, like: Tensor) -> Tensor:
        if self.scale_mode == "fixed":
            return torch.full_like(like, self.sigma)
        if self.scale_mode == "learned" or raw is None:
            raw = self.raw_scale.to(like.dtype).expand_as(like)
        return F.softplus(raw) + self.min_scale

    def distribution(self, loc: Tensor, raw: Tensor | None = None) -> Distribution:  # type: ignore[override]
        return self.family(loc, self.scale_from(raw, loc), validate_args=False)

    family: ClassVar[Callable[..., Distribution]]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scale={self.scale_mode!r}, sigma={self.sigma}"


class GaussianLikelihood(_LocScaleLikelihood):
    """Gaussian p(x|z) = N(loc, scale^2) per element; the mean is ``loc`` (no output squashing).

    Args:
        scale: ``"learned"`` (default), ``"fixed"`` or ``"per_pixel"``.
        sigma: the fixed scale or the learned scale's initial value (default 1.0).
    """

    family = Normal


class LaplaceLikelihood(_LocScaleLikelihood):
    """Laplace p(x|z) per element (an L1 reconstruction loss with a proper normaliser)."""

    family = Laplace


class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli p(x|z) (Loaiza-Ganem & Cunningham, 2019) for x in [0, 1].

    Correctly normalised; torch's implementation switches to a Taylor expansion near
    ``probs = 0.5`` where the normaliser is 0/0. The mean is the distribution's mean, not
    ``sigmoid(logits)``.
    """

    params_per_element = 1

    def distribution(self, logits: Tensor) -> Distribution:  # type: ignore[override]
        # Probabilities are clamped away from 0/1 inside torch (lims); logits keep gradients.
        return ContinuousBernoulli(logits=logits, validate_args=False)

    def validate_target(self, x: Tensor) -> None:
        _check_unit_interval(x, "continuous Bernoulli")


class DiscretizedLogisticMixture(Distribution):
    """Mixture of K logistics discretised to ``num_bins`` bins on [0, 1] (PixelCNN++ style).

    Every element is independent (no coupling between colour channels). Values are the bin
    centres ``k / (num_bins - 1)``; the first and last bins take the tails, so the bins sum
    to one exactly.

    Args:
        logit_weights: mixture logits of shape ``(..., K)``.
        loc: component locations in data units ([0, 1]), ``(..., K)``.
        log_scale: component log-scales in data units, ``(..., K)``.
        num_bins: number of values (256 for 8-bit data).
    """

    arg_constraints = {}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(
        self,
        logit_weights: Tensor,
        loc: Tensor,
        log_scale: Tensor,
        num_bins: int = 256,
        validate_args: bool | None = False,
    ):
        self.logit_weights = logit_weights
        self.loc = loc
        self.log_scale = log_scale.clamp(min=-7.0)
        self.num_bins = num_bins
        super().__init__(batch_shape=loc.shape[:-1], validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        half_bin = 0.5 / (self.num_bins - 1)
        x = value.to(self.loc.dtype).unsqueeze(-1)  # (..., 1) against (..., K)
        inv_scale = torch.exp(-self.log_scale)
        centred = x - self.loc
        plus = inv_scale * (centred + half_bin)
        minus = inv_scale * (centred - half_bin)
        # log CDF(plus) for the lowest bin, log (1 - CDF(minus)) for the highest bin.
        log_cdf_plus = F.logsigmoid(plus)
        log_one_minus_cdf_minus = -F.softplus(minus)
        # log(CDF(plus) - CDF(minus)), exact and stable in both tails through the identity
        # sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a)).
        # a - b = d = bin width / scale. For a very wide logistic d underflows to 0 and
        # log(1 - exp(-d)) would be -inf (a NaN gradient even where torch.where discards it),
        # so small d uses log(1 - exp(-d)) = log d - d/2 + O(d^2) with log d from log_scale.
        log_d = math.log(2 * half_bin) - self.log_scale
        d = torch.exp(log_d)
        small = d < 1e-4
        log_one_minus_exp = torch.where(
            small, log_d - d / 2, torch.log(-torch.expm1(-d.clamp(min=1e-4)))
        )
        log_mid = F.logsigmoid(plus) + F.logsigmoid(-minus) + log_one_minus_exp
        lowest = x < half_bin
        highest = x > 1 - half_bin
        log_bin = torch.where(
            lowest, log_cdf_plus, torch.where(highest, log_one_minus_cdf_minus, log_mid)
        )
        log_weights = F.log_softmax(self.logit_weights, dim=-1)
        return torch.logsumexp(log_weights + log_bin, dim=-1)

    @property
    def mean(self) -> Tensor:
        """Mixture of the component locations, clamped to [0, 1] (approximate bin mean)."""
        weights = F.softmax(self.logit_weights, dim=-1)
        return (weights * self.loc).sum(-1).clamp(0, 1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.logit_weights.shape
        with torch.no_grad():
            gumbel = -torch.log(
                -torch.log(torch.rand(shape, device=self.loc.device).clamp(1e-10, 1))
            )
            component = (self.logit_weights + gumbel).argmax(-1, keepdim=True)
            loc = self.loc.expand(shape).gather(-1, component).squeeze(-1)
            log_scale = self.log_scale.expand(shape).gather(-1, component).squeeze(-1)
            u = torch.rand_like(loc).clamp(1e-5, 1 - 1e-5)
            x = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
            return torch.round(x.clamp(0, 1) * (self.num_bins - 1)) / (self.num_bins - 1)


class DiscretizedLogisticLikelihood(Likelihood):
    """Discretised mixture of logistics for 8-bit data scaled to [0, 1] (values ``k/255``).

    Args:
        num_mixtures: number of logistic components K per element (default 5). The decoder
            emits ``3 * K`` outputs per data channel: mixture logits, locations, log-scales.
        num_bins: number of levels (default 256).
    """

    def __init__(self, num_mixtures: int = 5, num_bins: int = 256):
        super().__init__()
        if not (isinstance(num_mixtures, int) and num_mixtures >= 1):
            raise ValueError(f"num_mixtures must be an integer >= 1, got {num_mixtures!r}")
        if not (isinstance(num_bins, int) and num_bins >= 2):
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
        self.num_mixtures = num_mixtures
        self.num_bins = num_bins
        self.params_per_element = 3 * num_mixtures

    def elementwise(self, h: Tensor, channel_dim: int) -> Distribution:
        # (*batch, 3*K*C, *S) -> three tensors (*batch, C, *S, K)
        h = h.unflatten(channel_dim, (3, self.num_mixtures, -1)).movedim(channel_dim + 1, -1)
        logits, loc, log_scale = h.unbind(channel_dim)
        # Locations start around the middle of [0, 1]; sigmoid keeps them in range.
        return DiscretizedLogisticMixture(
            logits, torch.sigmoid(loc), log_scale, num_bins=self.num_bins
        )

    def validate_target(self, x: Tensor) -> None:
        _check_unit_interval(x, "discretized logistic")
        levels = x * (self.num_bins - 1)
        if x.numel() and (levels - levels.round()).abs().max() > 1e-3:
            raise ValueError(
                f"discretized_logistic targets must be on the {self.num_bins}-level grid "
                f"k/{self.num_bins - 1} (8-bit images divided by 255); got off-grid values. "
                "Quantise with torch.round(x * 255) / 255 or pick a continuous likelihood"
            )

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_mixtures={self.num_mixtures}, num_bins={self.num_bins}"


register_likelihood("bernoulli", BernoulliLikelihood)
register_likelihood("gaussian", GaussianLikelihood)
register_likelihood("laplace", LaplaceLikelihood)
register_likelihood("continuous_bernoulli", ContinuousBernoulliLikelihood)
register_likelihood("discretized_logistic", DiscretizedLogisticLikelihood)


def build_likelihood(name: str | type[Likelihood], kwargs: dict[str, Any] | None) -> Likelihood:
    """Instantiates a registered likelihood with keyword arguments, with a helpful error."""
    cls = get_likelihood_class(name)
    try:
        return cls(**(kwargs or {}))
    except TypeError as err:
        raise TypeError(f"invalid likelihood_kwargs for {cls.name!r}: {err}") from None
