"""Training: the :class:`Trainer`, its :class:`TrainConfig`, callbacks, checkpoints and
device resolution.

    >>> from vaekit.training import TrainConfig, resolve_device
    >>> TrainConfig(max_epochs=3).max_epochs
    3
"""

from vaekit.training.callbacks import (
    Callback,
    EarlyStopping,
    ImageGridSaver,
    JSONLLogger,
    TensorBoardLogger,
)
from vaekit.training.checkpoint import (
    OutputDirLockedError,
    find_latest_checkpoint,
    verify_checkpoint,
)
from vaekit.training.config import TrainConfig
from vaekit.training.device import available_devices, resolve_device
from vaekit.training.trainer import NonFiniteLossError, Trainer, lr_factor

__all__ = [
    "Callback",
    "EarlyStopping",
    "ImageGridSaver",
    "JSONLLogger",
    "NonFiniteLossError",
    "OutputDirLockedError",
    "TensorBoardLogger",
    "TrainConfig",
    "Trainer",
    "available_devices",
    "find_latest_checkpoint",
    "lr_factor",
    "resolve_device",
    "verify_checkpoint",
]
