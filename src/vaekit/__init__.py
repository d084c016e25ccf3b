"""vaekit: variational autoencoders in PyTorch.

Example:
    >>> import torch, vaekit
    >>> model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16)
    >>> out = model(torch.rand(8, 1, 28, 28))
    >>> out.loss.shape
    torch.Size([])
"""

from vaekit import data, viz
from vaekit.evaluation import evaluate
from vaekit.hub import AutoVAE, HubLoadError
from vaekit.likelihoods import Likelihood, list_likelihoods, register_likelihood
from vaekit.models import (
    MLPVAE,
    VAE,
    ConvVAE,
    ConvVAEConfig,
    MLPVAEConfig,
    VAEConfig,
    VAEOutput,
    list_models,
    register_model,
)
from vaekit.training import (
    Callback,
    NonFiniteLossError,
    OutputDirLockedError,
    TrainConfig,
    Trainer,
    resolve_device,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "MLPVAE",
    "VAE",
    "AutoVAE",
    "Callback",
    "ConvVAE",
    "ConvVAEConfig",
    "HubLoadError",
    "Likelihood",
    "MLPVAEConfig",
    "NonFiniteLossError",
    "OutputDirLockedError",
    "TrainConfig",
    "Trainer",
    "VAEConfig",
    "VAEOutput",
    "__version__",
    "data",
    "evaluate",
    "list_likelihoods",
    "list_models",
    "register_likelihood",
    "register_model",
    "resolve_device",
    "viz",
]
