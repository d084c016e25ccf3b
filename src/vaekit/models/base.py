"""The VAE base class shared by every architecture, its config and the model registry.

A subclass provides two networks, through :meth:`VAE.encoder_output` (the parameters of
q(z|x)) and :meth:`VAE.decoder_output` (the raw input of the likelihood); the base class turns
them into distributions and owns the objective, sampling and likelihood estimation.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from vaekit.likelihoods import (
    Likelihood,
    at_least_float32,
    build_likelihood,
    get_likelihood_class,
)
from vaekit.objectives import free_bits_kl, iwae_bound, kl_per_dim

__all__ = [
    "VAE",
    "VAEConfig",
    "VAEOutput",
    "get_model_class",
    "list_models",
    "make_activation",
    "register_model",
]

_MIN_POSTERIOR_SCALE = 1e-4

C = TypeVar("C", bound="VAEConfig")
M = TypeVar("M", bound="VAE")


# --------------------------------------------------------------------------------------------
# Config: a dataclass that round-trips through JSON exactly (tuples stay tuples).
# --------------------------------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Converts a JSON value to the annotated type, or raises ValueError saying what came."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return _coerce(value, option, name)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"{name}: expected {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list of values, got {type(value).__name__}")
        (item_hint, *_rest) = typing.get_args(hint)
        return tuple(_coerce(v, item_hint, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name}: expected an object with string keys, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    return value


@dataclass
class VAEConfig:
    """Architecture of a VAE: everything needed to rebuild it, and nothing about training.

    Attributes:
        input_shape: shape of one example, ``(C, H, W)`` for images or ``(D,)`` for vectors.
        latent_dim: number of latent dimensions.
        likelihood: name of a registered likelihood (see :func:`vaekit.list_likelihoods`).
        likelihood_kwargs: keyword arguments of the likelihood (e.g. ``{"scale": "fixed"}``).
        num_classes: number of classes for a conditional VAE, ``None`` for an unconditional one.
    """

    input_shape: tuple[int, ...]
    latent_dim: int
    likelihood: str = "bernoulli"
    likelihood_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None

    def __post_init__(self) -> None:
        shape = self.input_shape
        if isinstance(shape, torch.Size | list):
            shape = tuple(shape)
        if (
            not isinstance(shape, tuple)
            or len(shape) not in (1, 3)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise ValueError(
                f"input_shape must be (C, H, W) or (D,) with positive integers, got {shape!r}"
            )
        self.input_shape = shape
        if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int):
            raise TypeError(f"latent_dim must be an integer, got {self.latent_dim!r}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if isinstance(self.likelihood, type):
            self.likelihood = get_likelihood_class(self.likelihood).name
        get_likelihood_class(self.likelihood)  # raises with the list of valid names
        if self.likelihood_kwargs is None:
            self.likelihood_kwargs = {}
        if not isinstance(self.likelihood_kwargs, dict):
            raise TypeError(
                f"likelihood_kwargs must be a dict, got {type(self.likelihood_kwargs).__name__}"
            )
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 2
        ):
            raise ValueError(
                f"num_classes must be an integer >= 2 (or None), got {self.num_classes!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (tuples become lists; :meth:`from_dict` undoes it)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuilds a config from :meth:`to_dict` output, checking every key and type.

        Raises:
            ValueError: for unknown keys, missing required keys or values of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a {cls.__name__} is built from a dict, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys {unknown}; valid keys are {sorted(fields)}"
            )
        missing = [
            n
            for n, f in fields.items()
            if n not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{cls.__name__} is missing required keys {missing}")
        kwargs = {k: _coerce(v, hints[k], k) for k, v in data.items()}
        return cls(**kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Small building blocks shared by the architectures.
# --------------------------------------------------------------------------------------------

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


def activation_name(activation: str | type[nn.Module]) -> str:
    """Normalises a "name or class" activation argument to its registered name."""
    if isinstance(activation, type):
        for name, cls in ACTIVATIONS.items():
            if cls is activation:
                return name
        raise ValueError(
            f"activation class {activation.__name__} is not one of {', '.join(ACTIVATIONS)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid names are {', '.join(ACTIVATIONS)}"
        )
    return activation


def make_activation(activation: str | type[nn.Module]) -> nn.Module:
    """Instantiates an activation given by name (``"silu"``) or class (``nn.SiLU``)."""
    return ACTIVATIONS[activation_name(activation)]()


# --------------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------------


@dataclass
class VAEOutput:
    """What ``model(x)`` returns. All terms are in nats.

    Attributes:
        loss: scalar, the batch mean of ``beta * kl - log_px`` (the negative ELBO at beta=1),
            or the negative IWAE bound when ``iwae_samples > 1``.
        log_px: ``(B,)`` reconstruction term, log p(x|z) at the sampled z (averaged over the
            K samples for IWAE).
        kl: ``(B,)`` closed-form KL(q(z|x) || p(z)) (without free bits).
        z: the latent sample, ``(B, latent_dim)`` (``(K, B, latent_dim)`` for IWAE).
        qz: the posterior q(z|x), batch shape ``(B,)``.
        px: the likelihood p(x|z), batch shape ``(B,)`` (``(K*B,)`` for IWAE).
    """

    loss: Tensor
    log_px: Tensor
    kl: Tensor
    z: Tensor
    qz: Distribution
    px: Distribution

    @property
    def elbo(self) -> Tensor:
        """``(B,)`` the evidence lower bound ``log_px - kl`` per example."""
        return self.log_px - self.kl


class VAE(nn.Module):
    """Base class of vaekit's VAEs: q(z|x) diagonal Gaussian, p(z) standard normal, p(x|z)
    a :class:`~vaekit.likelihoods.Likelihood`.

    Subclasses set ``model_type`` and ``config_class``, build their networks in ``__init__``
    after calling ``super().__init__(config)``, and implement :meth:`encoder_output` and
    :meth:`decoder_output`. Register them with :func:`register_model` so that
    :class:`vaekit.AutoVAE` can load them.
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type[VAEConfig]] = VAEConfig
    prior_loc: Tensor
    prior_scale: Tensor

    def __init__(self, config: VAEConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.likelihood: Likelihood = build_likelihood(config.likelihood, config.likelihood_kwargs)
        #: Check every input in ``forward`` (shape, finite values, support). A trainer that has
        #: validated a whole in-memory dataset once may switch it off to save a sync per step.
        self.validate_inputs = True
        # The prior's parameters follow the model's device and dtype but are not weights.
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(config.latent_dim), persistent=False)

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_config(cls: type[M], config: VAEConfig | dict[str, Any]) -> M:
        """Builds a model with fresh weights from a config object or its dict form."""
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        if not isinstance(config, cls.config_class):
            raise TypeError(
                f"{cls.__name__}.from_config needs a {cls.config_class.__name__} or a dict, "
                f"got {type(config).__name__}"
            )
        kwargs = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        return cls(**kwargs)

    # ---- properties ------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.config.input_shape

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        return self.prior_loc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prior_loc.dtype

    # ---- the networks, provided by subclasses ------------------------------------------------

    def encoder_output(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Raw encoder output ``(B, 2 * latent_dim)``: location and pre-softplus scale.

        ``y`` is the one-hot label ``(B, num_classes)`` for conditional models, else ``None``.
        """
        raise NotImplementedError

    def decoder_output(self, z: Tensor, y: Tensor | None) -> Tensor:
        """Raw decoder output ``(B, k * C, *spatial)`` for the likelihood (k its
        ``params_per_element``); ``y`` as in :meth:`encoder_output`."""
        raise NotImplementedError

    # ---- input checks ----------------------------------------------------------------------

    def check_input(self, x: Tensor, y: Tensor | None = None) -> None:
        """Raises ``TypeError``/``ValueError`` explaining what is wrong with a batch.

        Args:
            x: a batch of shape ``(B, *input_shape)``, floating point, finite, inside the
                likelihood's support.
            y: class labels ``(B,)`` in ``[0, num_classes)`` for a conditional model.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"expected x to be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"expected a floating-point x, got {x.dtype}; convert it, e.g. x.float() / 255 "
                "for 8-bit images"
            )
        expected = (x.shape[0], *self.input_shape) if x.dim() else self.input_shape
        if tuple(x.shape) != tuple(expected) or x.dim() != len(self.input_shape) + 1:
            raise ValueError(self._shape_hint(x))
        if x.shape[0] == 0:
            raise ValueError(
                f"x holds no examples (shape {tuple(x.shape)}); pass a batch of at least one"
            )
        if not torch.isfinite(x).all():
            raise ValueError(
                "x contains NaN or Inf values; clean the data (e.g. torch.nan_to_num) first"
            )
        self.likelihood.validate_target(x)
        self._check_labels(y, x.shape[0])

    def _shape_hint(self, x: Tensor) -> str:
        shape = tuple(x.shape)
        want = f"(B, {', '.join(map(str, self.input_shape))})"
        msg = f"expected x of shape {want}, got {shape}"
        per_example = math.prod(shape[1:]) if len(shape) > 1 else None
        if len(shape) == len(self.input_shape) and shape == self.input_shape:
            return msg + "; add the batch dimension with x.unsqueeze(0)"
        if per_example == math.prod(self.input_shape):
            return (
                f"{msg}; reshape it with x.reshape(-1, {', '.join(map(str, self.input_shape))}) "
                f"or build the model with input_shape={shape[1:]}"
            )
        if len(shape) == 4 and len(self.input_shape) == 3 and shape[2:] == self.input_shape[1:]:
            return (
                f"{msg}: {shape[1]} channels instead of {self.input_shape[0]}; convert the "
                f"images or build the model with input_shape={shape[1:]}"
            )
        return msg + f"; build the model with input_shape={shape[1:]} to use this data"

    def _check_labels(self, y: Tensor | None, batch: int) -> None:
        if self.num_classes is None:
            if y is not None:
                raise ValueError(
                    "this model is not conditional but labels y were given; build it with "
                    "num_classes=N to condition on labels, or call it without y"
                )
            return
        if y is None:
            raise ValueError(
                f"this conditional model (num_classes={self.num_classes}) needs labels: "
                "pass y, a LongTensor of shape (B,)"
            )
        if not isinstance(y, Tensor) or y.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
            torch.int8,
        ):
            raise TypeError(f"expected integer class labels y, got {getattr(y, 'dtype', type(y))}")
        if y.shape != (batch,):
            raise ValueError(f"expected labels y of shape ({batch},), got {tuple(y.shape)}")
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got values in "
                f"[{y.min().item()}, {y.max().item()}]"
            )

    def _one_hot(self, y: Tensor | None, like: Tensor) -> Tensor | None:
        if self.num_classes is None or y is None:
            return None
        return F.one_hot(y.long(), self.num_classes).to(like.dtype)

    # ---- distributions ---------------------------------------------------------------------

    def prior(self) -> Distribution:
        """p(z): standard normal, batch shape ``()``, event shape ``(latent_dim,)``."""
        loc = at_least_float32(self.prior_loc)
        scale = at_least_float32(self.prior_scale)
        return Independent(Normal(loc, scale, validate_args=False), 1)

    def _posterior(self, x: Tensor, y1h: Tensor | None) -> Distribution:
        h = at_least_float32(self.encoder_output(x.to(self.dtype), y1h))
        loc, raw_scale = h.chunk(2, dim=-1)
        scale = F.softplus(raw_scale) + _MIN_POSTERIOR_SCALE
        return Independent(Normal(loc, scale, validate_args=False), 1)

    def _likelihood(self, z: Tensor, y1h: Tensor | None) -> Distribution:
        return self.likelihood(self.decoder_output(z.to(self.dtype), y1h))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Distribution:
        """q(z|x): a diagonal Gaussian with batch shape ``(B,)``, event shape ``(latent_dim,)``.

        Args:
            x: ``(B, *input_shape)``.
            y: labels ``(B,)``, for conditional models only.
        """
        self.check_input(x, y)
        return self._posterior(x, self._one_hot(y, x))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z): batch shape ``(B,)``, event shape ``input_shape``.

        Args:
            z: ``(B, latent_dim)``.
            y: labels ``(B,)``, for conditional models only.
        """
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"expected z of shape (B, {self.latent_dim}), got {got}")
        self._check_labels(y, z.shape[0])
        return self._likelihood(z, self._one_hot(y, z))

    # ---- objective -------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        y: Tensor | None = None,
        *,
        beta: float = 1.0,
        free_bits: float = 0.0,
        iwae_samples: int = 1,
    ) -> VAEOutput:
        """Runs the VAE on a batch and computes its loss.

        Args:
            x: ``(B, *input_shape)``.
            y: labels ``(B,)``, for conditional models only.
            beta: weight of the KL term (1 gives the ELBO).
            free_bits: nats per latent dimension below which the KL is not penalised.
            iwae_samples: K > 1 trains on the importance-weighted bound with K samples
                (beta then weights ``log p(z) - log q(z|x)`` inside each weight).

        Returns:
            A :class:`VAEOutput`; ``loss`` is the batch mean of ``beta * kl - log_px`` in nats
            per example.
        """
        if self.validate_inputs:
            self.check_input(x, y)
        if iwae_samples < 1:
            raise ValueError(f"iwae_samples must be >= 1, got {iwae_samples}")
        if not isinstance(beta, Tensor) and (
            isinstance(beta, bool)
            or not isinstance(beta, int | float)
            or not math.isfinite(beta)
            or beta < 0
        ):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        y1h = self._one_hot(y, x)
        qz = self._posterior(x, y1h)
        pz = self.prior()
        kl = kl_divergence(qz, pz)  # (B,)
        if iwae_samples == 1:
            z = qz.rsample()  # (B, D)
            px = self._likelihood(z, y1h)
            log_px = px.log_prob(x)  # (B,)
            kl_term = free_bits_kl(kl_per_dim(qz, pz), free_bits) if free_bits else kl
            loss = (beta * kl_term - log_px).mean()
            return VAEOutput(loss=loss, log_px=log_px, kl=kl, z=z, qz=qz, px=px)
        k = iwae_samples
        z = qz.rsample((k,))  # (K, B, D)
        y_k = None if y1h is None else repeat(y1h, "b c -> (k b) c", k=k)
        px = self._likelihood(z.flatten(0, 1), y_k)
        x_k = repeat(x, "b ... -> (k b) ...", k=k)
        log_px = px.log_prob(x_k).view(k, -1)  # (K, B)
        log_w = log_px + beta * (pz.log_prob(z) - qz.log_prob(z))
        loss = -iwae_bound(log_w).mean()
        return VAEOutput(loss=loss, log_px=log_px.mean(0), kl=kl, z=z, qz=qz, px=px)

    # ---- inference -------------------------------------------------------------------------

    def _labels_for(self, n: int, y: Tensor | int | None) -> Tensor | None:
        if isinstance(y, int) and not isinstance(y, bool):
            return torch.full((n,), y, dtype=torch.long, device=self.device)
        if y is not None and not isinstance(y, Tensor):
            raise TypeError(f"y must be a LongTensor or an int class index, got {type(y).__name__}")
        return y

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws ``n`` samples z from the prior and returns the mean of p(x|z).

        Args:
            n: number of samples.
            y: for conditional models, labels ``(n,)`` or one class index for all.
            generator: a ``torch.Generator`` for reproducible samples (on any device).

        Returns:
            ``(n, *input_shape)`` on the model's device.

        Example:
            >>> import torch, vaekit
            >>> model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=2)
            >>> model.sample(4, generator=torch.Generator().manual_seed(0)).shape
            torch.Size([4, 1, 28, 28])
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        gen_device = generator.device if generator is not None else self.device
        z = torch.randn(
            (n, self.latent_dim), generator=generator, device=gen_device, dtype=self.dtype
        ).to(self.device)
        y = self._labels_for(n, y)
        return self.decode(z, y).mean.to(self.dtype)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decodes the posterior mean of each input: the mean of p(x | z = E[q(z|x)])."""
        qz = self.encode(x, y)
        return self._likelihood(qz.mean, self._one_hot(y, x)).mean.to(x.dtype)

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        y: Tensor | None = None,
        num_samples: int = 1000,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Importance-sampled estimate of log p(x) with q(z|x) as proposal, in nats.

        ``log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)``, a lower bound in expectation that
        converges to log p(x) as K grows (Burda et al., 2016). Vectorised over samples and
        chunked so that K=5000 fits in memory. Call ``model.eval()`` first if the model has
        dropout or batch norm.

        Args:
            x: ``(B, *input_shape)``.
            y: labels ``(B,)`` for conditional models.
            num_samples: K, the number of importance samples.
            chunk_size: samples decoded at once; by default about 2**24 output elements.
            generator: optional ``torch.Generator`` on x's device for reproducibility.

        Returns:
            ``(B,)`` estimates of log p(x) in nats.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.check_input(x, y)
        batch = x.shape[0]
        y1h = self._one_hot(y, x)
        qz = self._posterior(x, y1h)
        pz = self.prior()
        if chunk_size is None:
            per_sample = batch * math.prod(self.input_shape) * self.likelihood.params_per_element
            chunk_size = max(1, min(num_samples, 2**24 // max(per_sample, 1)))
        loc, scale = qz.base_dist.loc, qz.base_dist.scale  # type: ignore[attr-defined]
        log_ws = []
        for start in range(0, num_samples, chunk_size):
            k = min(chunk_size, num_samples - start)
            eps = torch.randn(
                (k, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype
            )
            z = loc + scale * eps  # (k, B, D)
            y_k = None if y1h is None else repeat(y1h, "b c -> (k b) c", k=k)
            h = self.decoder_output(z.flatten(0, 1).to(self.dtype), y_k).unflatten(0, (k, batch))
            px = self.likelihood(h, event_dims=len(self.input_shape))  # batch shape (k, B)
            log_px = px.log_prob(x)  # x broadcasts over the k samples: (k, B)
            log_ws.append(log_px + pz.log_prob(z) - qz.log_prob(z))
        return iwae_bound(torch.cat(log_ws))

    # ---- Hub -------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Path:
        """Writes ``config.json``, ``model.safetensors`` and ``README.md`` to a directory."""
        from vaekit import hub

        return hub.save_pretrained(self, save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls: type[M], name_or_path: str | Path, **kwargs: Any) -> M:
        """Loads a model saved with :meth:`save_pretrained`, from a directory or the Hub.

        Loading is strict and safetensors-only; see :func:`vaekit.hub.load_pretrained` for
        the arguments (``revision``, ``device``, ``dtype``, ...).
        """
        from vaekit import hub

        return hub.load_pretrained(cls, name_or_path, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Uploads the model (config, safetensors weights, model card) to a Hub repository."""
        from vaekit import hub

        return hub.push_to_hub(self, repo_id, **kwargs)


# --------------------------------------------------------------------------------------------
# Registry of model classes, keyed by model_type (used by AutoVAE).
# --------------------------------------------------------------------------------------------

_MODELS: dict[str, type[VAE]] = {}


def register_model(cls: type[M]) -> type[M]:
    """Class decorator that makes a VAE subclass loadable by ``AutoVAE`` via its model_type."""
    if not (isinstance(cls, type) and issubclass(cls, VAE)):
        raise TypeError(f"expected a subclass of vaekit.VAE, got {cls!r}")
    if not cls.model_type:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute model_type")
    existing = _MODELS.get(cls.model_type)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"model_type {cls.model_type!r} is already registered to {existing.__qualname__}"
        )
    _MODELS[cls.model_type] = cls
    return cls


def get_model_class(model_type: str) -> type[VAE]:
    """The registered VAE class for a ``model_type``."""
    if model_type not in _MODELS:
        raise ValueError(
            f"unknown model_type {model_type!r}; registered types are {', '.join(list_models())}"
            " (a custom class must be imported and decorated with @vaekit.register_model)"
        )
    return _MODELS[model_type]


def list_models() -> list[str]:
    """The registered model types, sorted."""
    return sorted(_MODELS)
