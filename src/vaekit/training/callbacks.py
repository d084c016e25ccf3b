"""Callbacks: small hooks into the training loop, and the built-in ones.

Subclass :class:`Callback` and override the hooks you need; pass instances to
``Trainer(..., callbacks=[...])``. Every hook receives the trainer, whose attributes
(``model``, ``config``, ``step``, ``epoch``, ``history``, ``output_dir``, ``rank``, ...) can be
read, and may set ``trainer.should_stop = True`` to end training after the current step.

Order of calls in one run::

    on_fit_start
    for each epoch:
        on_step_end            (every step)
        on_log                 (every ``log_every_steps`` steps)
        on_eval_end            (when eval data are evaluated)
        on_epoch_end
    on_fit_end

A callback with state that must survive a resume implements ``state_dict() -> dict`` (JSON-able
values) and ``load_state_dict(dict)``; the trainer stores it in every checkpoint.

Example:
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, trainer, metrics):
    ...         logging.getLogger("mine").info("epoch %d: %.2f", metrics["epoch"],
    ...                                        metrics["train_loss"])
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vaekit.training.trainer import Trainer

__all__ = [
    "Callback",
    "EarlyStopping",
    "ImageGridSaver",
    "JSONLLogger",
    "TensorBoardLogger",
]

logger = logging.getLogger(__name__)


class Callback:
    """Base class of training callbacks; every hook does nothing by default."""

    def on_fit_start(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """Before the first step; ``metrics`` holds ``step`` and ``epoch`` (non-zero on resume)."""

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After every step. ``metrics``: ``step``, ``epoch``, ``batch``, ``beta``, ``lr`` and
        ``loss``, a detached 0-dim tensor on the device (``float()`` it only when needed: that
        waits for the device) — or ``skipped=True`` for a step skipped by ``nan_policy``."""

    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """Every ``log_every_steps`` steps, with means over those steps as Python floats:
        ``step``, ``epoch``, ``loss``, ``kl``, ``log_px``, ``beta``, ``lr``, ``images_per_s``."""

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After evaluating the eval data: ``loss`` (negative ELBO, nats), ``kl``, ``log_px``,
        ``elbo``, ``num_examples``, ``epoch``, ``step``."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After each epoch, with the epoch's history entry (see :meth:`Trainer.fit`)."""

    def on_fit_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After training ends normally; ``metrics`` is the last history entry (or ``{}``)."""

    def close(self) -> None:
        """Releases files and writers; called once, even when training fails."""


class EarlyStopping(Callback):
    """Stops training when a monitored loss has not improved for ``patience`` epochs.

    Args:
        patience: epochs without improvement (that carry the monitored value) before stopping.
        min_delta: the decrease in nats that counts as an improvement.
        monitor: a key of the epoch metrics; ``None`` picks ``eval_loss`` when it is present,
            else ``train_loss``.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str | None = None):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.monitor = monitor
        self.best = math.inf
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        key = self.monitor or ("eval_loss" if "eval_loss" in metrics else "train_loss")
        value = metrics.get(key)
        if value is None:
            return
        value = float(value)
        if value < self.best - self.min_delta:
            self.best = value
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = int(metrics["epoch"])
            trainer.should_stop = True
            logger.info(
                "early stopping at epoch %d: %s has not improved on %.4f for %d epochs",
                self.stopped_epoch,
                key,
                self.best,
                self.wait,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.stopped_epoch = state.get("stopped_epoch")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


class JSONLLogger(Callback):
    """Appends one JSON object per line to a file: ``{"type": "step", ...}`` every
    ``log_every_steps`` steps and ``{"type": "epoch", ...}`` (the history entry) per epoch.

    Args:
        path: the ``.jsonl`` file (its directory is created).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: Any = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self._write({"type": "step", **metrics})

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self._write({"type": "epoch", **metrics})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger(Callback):
    """Writes step and epoch metrics to TensorBoard (needs the ``tensorboard`` package).

    Args:
        log_dir: the event file directory.

    Raises:
        ImportError: when TensorBoard is not installed, saying how to install it.
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "tensorboard=True needs the tensorboard package: pip install 'vaekit[tensorboard]'"
                " (or pip install tensorboard), or set tensorboard=False"
            ) from err
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        for key in ("loss", "kl", "log_px", "beta", "lr", "images_per_s"):
            if key in metrics:
                self.writer.add_scalar(f"train_step/{key}", metrics[key], metrics["step"])

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key in ("epoch", "step") or not isinstance(value, (int, float)):
                continue
            group = "eval" if key.startswith("eval_") else "train"
            self.writer.add_scalar(f"{group}/{key.removeprefix('eval_')}", value, metrics["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class ImageGridSaver(Callback):
    """Saves PNG grids of samples from the prior and of reconstructions after each epoch.

    Files: ``directory/epoch-XXXX-samples.png`` and ``directory/epoch-XXXX-reconstructions.png``
    (the top rows are inputs, the rows below them their reconstructions). Only for image
    models with 1 or 3 channels. Samples use a fixed seed, so grids of successive epochs show
    the same latent points.

    Args:
        directory: where the PNG files go.
        num_samples: images per grid.
        seed: seed of the latent points.
    """

    def __init__(self, directory: str | Path, num_samples: int = 64, seed: int = 0):
        self.directory = Path(directory)
        self.num_samples = num_samples
        self.seed = seed

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        from torchvision.utils import save_image

        model = trainer.model
        shape = model.input_shape
        if len(shape) != 3 or shape[0] not in (1, 3):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        epoch = int(metrics["epoch"])
        nrow = max(1, int(math.sqrt(self.num_samples)))
        was_training = model.training
        model.eval()
        try:
            generator = torch.Generator(device=model.device).manual_seed(self.seed)
            y = None
            if model.num_classes is not None:
                y = torch.arange(self.num_samples, device=model.device) % model.num_classes
            samples = model.sample(self.num_samples, y=y, generator=generator)
            path = self.directory / f"epoch-{epoch:04d}-samples.png"
            save_image(samples.float(), path, nrow=nrow)
            batch = trainer.preview_batch(self.num_samples // 2)
            if batch is not None:
                x, labels = batch
                recon = model.reconstruct(x, labels if model.num_classes is not None else None)
                rows = max(1, nrow)
                # Interleave blocks of `rows` inputs with their reconstructions.
                pieces = []
                for start in range(0, x.shape[0], rows):
                    pieces += [x[start : start + rows], recon[start : start + rows]]
                grid = torch.cat(pieces).float()
                path = self.directory / f"epoch-{epoch:04d}-reconstructions.png"
                save_image(grid, path, nrow=rows)
        finally:
            model.train(was_training)
