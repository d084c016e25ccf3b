"""MLPVAE: a VAE whose encoder and decoder are multilayer perceptrons.

    >>> import torch, vaekit
    >>> model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16, hidden_dims=(512, 256))
    >>> out = model(torch.rand(8, 1, 28, 28))
    >>> out.loss.shape, out.kl.shape
    (torch.Size([]), torch.Size([8]))

With ``hidden_dims=()`` and ``likelihood="gaussian"`` the model is exactly probabilistic PCA:
a linear decoder mean with no output nonlinearity and an isotropic learned noise scale.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from vaekit.likelihoods import Likelihood
from vaekit.models.base import VAE, VAEConfig, activation_name, make_activation, register_model

__all__ = ["MLPVAE", "MLPVAEConfig"]

_NORMS = (None, "batch", "layer")


@dataclass
class MLPVAEConfig(VAEConfig):
    """Architecture of an :class:`MLPVAE` (see :class:`~vaekit.models.base.VAEConfig` too).

    Attributes:
        hidden_dims: widths of the encoder's hidden layers; the decoder mirrors them.
        activation: activation name (``"relu"``, ``"silu"``, ...).
        norm: ``None``, ``"batch"`` or ``"layer"`` normalisation after each hidden layer.
        dropout: dropout probability after each hidden layer.
    """

    hidden_dims: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    norm: str | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        dims = tuple(self.hidden_dims) if isinstance(self.hidden_dims, list) else self.hidden_dims
        if not isinstance(dims, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims
        ):
            raise ValueError(f"hidden_dims must be a tuple of positive integers, got {dims!r}")
        self.hidden_dims = dims
        self.activation = activation_name(self.activation)
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


def _mlp(dims: list[int], config: MLPVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims):
        layers.append(nn.Linear(d_in, d_out))
        if config.norm == "batch":
            layers.append(nn.BatchNorm1d(d_out))
        elif config.norm == "layer":
            layers.append(nn.LayerNorm(d_out))
        layers.append(make_activation(config.activation))
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
    return nn.Sequential(*layers)


@register_model
class MLPVAE(VAE):
    """A VAE with fully connected encoder and decoder, for any ``(C, H, W)`` or ``(D,)`` input.

    Args:
        input_shape: shape of one example, e.g. ``(1, 28, 28)`` or ``(784,)``.
        latent_dim: number of latent dimensions.
        hidden_dims: encoder hidden widths; the decoder uses them in reverse.
        activation: ``"relu"`` (default), ``"silu"``, ``"gelu"``, ... or the ``nn`` class.
        norm: ``None``, ``"batch"`` or ``"layer"``.
        dropout: dropout probability after each hidden layer.
        likelihood: p(x|z) family by name (``"bernoulli"``, ``"gaussian"``, ...).
        likelihood_kwargs: its arguments, e.g. ``{"scale": "per_pixel"}``.
        num_classes: build a conditional VAE on ``num_classes`` labels.
    """

    model_type = "mlp_vae"
    config_class = MLPVAEConfig
    config: MLPVAEConfig

    def __init__(
        self,
        input_shape: tuple[int, ...],
        latent_dim: int,
        hidden_dims: tuple[int, ...] = (512, 256),
        activation: str | type[nn.Module] = "relu",
        norm: str | None = None,
        dropout: float = 0.0,
        likelihood: str | type[Likelihood] = "bernoulli",
        likelihood_kwargs: dict[str, Any] | None = None,
        num_classes: int | None = None,
    ):
        config = MLPVAEConfig(
            input_shape=input_shape,
            latent_dim=latent_dim,
            hidden_dims=hidden_dims,
            activation=activation,  # type: ignore[arg-type]  # normalised to a name
            norm=norm,
            dropout=dropout,
            likelihood=likelihood,  # type: ignore[arg-type]  # normalised to a name
            likelihood_kwargs=likelihood_kwargs or {},
            num_classes=num_classes,
        )
        super().__init__(config)
        data_dim = math.prod(config.input_shape)
        label_dim = config.num_classes or 0
        hidden = list(config.hidden_dims)
        self.encoder = _mlp([data_dim + label_dim, *hidden], config)
        self.encoder_head = nn.Linear(([data_dim + label_dim, *hidden])[-1], 2 * latent_dim)
        rev = hidden[::-1]
        self.decoder = _mlp([latent_dim + label_dim, *rev], config)
        out_dim = self.likelihood.params_per_element * data_dim
        self.decoder_head = nn.Linear(([latent_dim + label_dim, *rev])[-1], out_dim)

    def encoder_output(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = rearrange(x, "b ... -> b (...)")
        if y is not None:
            h = torch.cat([h, y.to(h.dtype)], dim=-1)
        return self.encoder_head(self.encoder(h))  # (B, 2 * latent_dim)

    def decoder_output(self, z: Tensor, y: Tensor | None) -> Tensor:
        if y is not None:
            z = torch.cat([z, y.to(z.dtype)], dim=-1)
        h = self.decoder_head(self.decoder(z))  # (B, k * prod(input_shape))
        if len(self.input_shape) == 1:
            return h  # (B, k * D)
        _, height, width = self.input_shape
        return rearrange(h, "b (kc h w) -> b kc h w", h=height, w=width)  # (B, k * C, H, W)
