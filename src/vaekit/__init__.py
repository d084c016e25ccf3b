"""vaekit: variational autoencoders in PyTorch.

Example:
    >>> import torch, vaekit
    >>> model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=16)
    >>> out = model(torch.rand(8, 1, 28, 28))
    >>> out.loss.shape
    torch.Size([])
"""

__version__ = "0.1.0.dev0"
