"""VAE architectures: the shared base class and one file per architecture."""

from vaekit.models.base import (
    VAE,
    VAEConfig,
    VAEOutput,
    get_model_class,
    list_models,
    register_model,
)
from vaekit.models.conv import ConvVAE, ConvVAEConfig
from vaekit.models.mlp import MLPVAE, MLPVAEConfig

__all__ = [
    "MLPVAE",
    "VAE",
    "ConvVAE",
    "ConvVAEConfig",
    "MLPVAEConfig",
    "VAEConfig",
    "VAEOutput",
    "get_model_class",
    "list_models",
    "register_model",
]
