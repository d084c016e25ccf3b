"""ConvVAE: a convolutional VAE with residual blocks, for images of any size.

    >>> import torch, vaekit
    >>> model = vaekit.ConvVAE(input_shape=(1, 37, 23), latent_dim=8, channels=(8, 16))
    >>> model.sample(2).shape
    torch.Size([2, 1, 37, 23])

The encoder halves the resolution between stages (stride-2 convolutions, rounding up); the
decoder upsamples to the exact sizes the encoder saw, so odd sizes come back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from vaekit.likelihoods import Likelihood
from vaekit.models.base import VAE, VAEConfig, activation_name, make_activation, register_model

__all__ = ["ConvVAE", "ConvVAEConfig"]

_NORMS = (None, "group", "batch", "layer")


@dataclass
class ConvVAEConfig(VAEConfig):
    """Architecture of a :class:`ConvVAE` (see :class:`~vaekit.models.base.VAEConfig` too).

    Attributes:
        channels: width of each stage; the resolution halves between stages.
        blocks_per_stage: residual blocks in each stage (0 for plain strided convolutions).
        norm: ``"group"`` (default), ``"batch"``, ``"layer"`` or ``None``.
        activation: activation name (``"silu"`` by default).
    """

    channels: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    norm: str | None = "group"
    activation: str = "silu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.input_shape) != 3:
            raise ValueError(
                f"ConvVAE needs image input_shape (C, H, W), got {self.input_shape}; "
                "use MLPVAE for vector data"
            )
        chans = tuple(self.channels) if isinstance(self.channels, list) else self.channels
        if (
            not isinstance(chans, tuple)
            or not chans
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in chans)
        ):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {chans!r}")
        self.channels = chans
        if (
            isinstance(self.blocks_per_stage, bool)
            or not isinstance(self.blocks_per_stage, int)
            or self.blocks_per_stage < 0
        ):
            raise ValueError(
                f"blocks_per_stage must be an integer >= 0, got {self.blocks_per_stage!r}"
            )
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")
        self.activation = activation_name(self.activation)


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ResBlock(nn.Module):
    """Pre-activation residual block: norm, act, conv 3x3, norm, act, conv 3x3, plus input."""

    def __init__(self, channels: int, norm: str | None, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            _norm(norm, channels),
            make_activation(activation),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(norm, channels),
            make_activation(activation),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@register_model
class ConvVAE(VAE):
    """A convolutional VAE for ``(C, H, W)`` images of any size.

    Args:
        input_shape: ``(C, H, W)``.
        latent_dim: number of latent dimensions.
        channels: width of each stage, e.g. ``(32, 64, 128)`` (two halvings of resolution).
        blocks_per_stage: residual blocks per stage in the encoder and the decoder.
        norm: ``"group"`` (default), ``"batch"``, ``"layer"`` or ``None``.
        activation: ``"silu"`` (default), ``"relu"``, ... or the ``nn`` class.
        likelihood: p(x|z) family by name (``"bernoulli"``, ``"gaussian"``, ...).
        likelihood_kwargs: its arguments, e.g. ``{"num_mixtures": 10}``.
        num_classes: build a conditional VAE on ``num_classes`` labels.
    """

    model_type = "conv_vae"
    config_class = ConvVAEConfig
    config: ConvVAEConfig

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        latent_dim: int,
        channels: tuple[int, ...] = (32, 64, 128),
        blocks_per_stage: int = 1,
        norm: str | None = "group",
        activation: str | type[nn.Module] = "silu",
        likelihood: str | type[Likelihood] = "bernoulli",
        likelihood_kwargs: dict[str, Any] | None = None,
        num_classes: int | None = None,
    ):
        config = ConvVAEConfig(
            input_shape=input_shape,
            latent_dim=latent_dim,
            channels=channels,
            blocks_per_stage=blocks_per_stage,
            norm=norm,
            activation=activation,  # type: ignore[arg-type]  # normalised to a name
            likelihood=likelihood,  # type: ignore[arg-type]  # normalised to a name
            likelihood_kwargs=likelihood_kwargs or {},
            num_classes=num_classes,
        )
        super().__init__(config)
        in_channels, height, width = config.input_shape
        chans, act, norm_kind = config.channels, config.activation, config.norm
        # Spatial size at each stage: stride-2 convolutions with padding 1 round up.
        sizes = [(height, width)]
        for _ in chans[1:]:
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        self.stage_sizes = sizes
        label_dim = config.num_classes or 0

        def blocks(c: int) -> list[nn.Module]:
            return [ResBlock(c, norm_kind, act) for _ in range(config.blocks_per_stage)]

        enc: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1)]
        for i, c in enumerate(chans):
            if i > 0:
                enc.append(nn.Conv2d(chans[i - 1], c, 3, stride=2, padding=1))
            enc.extend(blocks(c))
        enc += [_norm(norm_kind, chans[-1]), make_activation(act)]
        self.encoder = nn.Sequential(*enc)
        flat = chans[-1] * sizes[-1][0] * sizes[-1][1]
        self.encoder_head = nn.Linear(flat + label_dim, 2 * latent_dim)

        self.decoder_in = nn.Linear(latent_dim + label_dim, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(len(chans))):
            dec.extend(blocks(chans[i]))
            if i > 0:
                dec.append(nn.Upsample(size=sizes[i - 1], mode="nearest"))
                dec.append(nn.Conv2d(chans[i], chans[i - 1], 3, padding=1))
        out_channels = self.likelihood.params_per_element * in_channels
        dec += [
            _norm(norm_kind, chans[0]),
            make_activation(act),
            nn.Conv2d(chans[0], out_channels, 3, padding=1),
        ]
        self.decoder = nn.Sequential(*dec)

    def encoder_output(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = rearrange(self.encoder(x), "b c h w -> b (c h w)")
        if y is not None:
            h = torch.cat([h, y.to(h.dtype)], dim=-1)
        return self.encoder_head(h)  # (B, 2 * latent_dim)

    def decoder_output(self, z: Tensor, y: Tensor | None) -> Tensor:
        if y is not None:
            z = torch.cat([z, y.to(z.dtype)], dim=-1)
        h_last, w_last = self.stage_sizes[-1]
        h = rearrange(self.decoder_in(z), "b (c h w) -> b c h w", h=h_last, w=w_last)
        return self.decoder(h)  # (B, k * C, H, W)
