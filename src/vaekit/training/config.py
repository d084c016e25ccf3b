"""TrainConfig: every knob of a training run, as a dataclass that round-trips through JSON.

>>> from vaekit.training import TrainConfig
>>> config = TrainConfig(max_epochs=5, lr=3e-4, adam_betas=(0.9, 0.99))
>>> TrainConfig.from_json(config.to_json()) == config
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The coercion helpers live next to the model configs, which use the same JSON rules.
from vaekit.models.base import _coerce, _jsonable

__all__ = ["TrainConfig"]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
BETA_SCHEDULES = ("constant", "linear", "cyclical")
PRECISIONS = ("fp32", "bf16", "fp16")
NAN_POLICIES = ("raise", "skip")
DATA_PATHS = ("auto", "memory", "loader")
MATMUL_PRECISIONS = ("highest", "high", "medium")


@dataclass
class TrainConfig:
    """Settings of a :class:`~vaekit.training.Trainer` run (the model's config holds the
    architecture; this holds everything about optimisation, data, devices and output).

    Attributes:
        max_epochs: stop after this many passes over the training data.
        max_steps: stop after this many optimisation steps, if it comes first (``None``: no
            step limit). The cosine schedule decays over ``min(max_steps, max_epochs * steps
            per epoch)`` steps.
        batch_size: examples per step *per process* (under ``torchrun`` the global batch is
            ``batch_size * world_size``).
        eval_batch_size: examples per evaluation batch (``None``: ``batch_size``).
        drop_last: drop the last incomplete training batch of each epoch.
        lr: peak learning rate.
        optimizer: ``"adam"`` (L2 ``weight_decay``) or ``"adamw"`` (decoupled weight decay).
        adam_betas: Adam's moment coefficients.
        weight_decay: weight decay coefficient.
        lr_warmup_steps: the learning rate rises linearly over the first steps:
            ``lr * (step + 1) / lr_warmup_steps``.
        lr_schedule: ``"constant"`` after warm-up, or ``"cosine"`` decay to
            ``min_lr_ratio * lr`` at the last step.
        min_lr_ratio: floor of the cosine schedule, as a fraction of ``lr``.
        grad_clip_norm: clip the global gradient norm to this value (``None``: no clipping).
        beta: the KL weight (the maximum of the warm-up and cyclical schedules).
        beta_schedule: ``"constant"``, ``"linear"`` (KL warm-up from 0 to ``beta`` over
            ``kl_warmup_steps``) or ``"cyclical"`` (Fu et al., 2019).
        kl_warmup_steps: length of the linear KL warm-up, in steps.
        beta_cycle_steps: length of one cycle of the cyclical schedule (``None``: a quarter of
            the run, i.e. four cycles).
        beta_cycle_ratio: fraction of each cycle during which beta rises.
        free_bits: nats per latent dimension below which the KL is not penalised.
        iwae_samples: train on the importance-weighted bound with this many samples (1: ELBO).
        binarize: dynamically binarize every training batch on the device
            (``x ~ Bernoulli(grey level)``); evaluation data get one fixed binarization.
        device: ``"auto"`` (the available accelerator, else CPU), ``"cpu"``, ``"cuda:1"``, ...
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast + loss scaling).
        compile: ``torch.compile`` the model's forward for training.
        matmul_precision: if set, ``torch.set_float32_matmul_precision`` during ``fit``
            (``"high"`` allows TF32 on NVIDIA GPUs); ``None`` leaves it alone.
        data_path: ``"auto"`` trains in-memory tensor datasets (``TensorDataset`` or anything
            with ``.x``/``.labels`` tensors) by indexing them on the device and everything else
            through a ``DataLoader``; ``"memory"`` or ``"loader"`` force one path.
        num_workers: ``DataLoader`` worker processes (loader path only).
        output_dir: where checkpoints, the best and the final model, ``metrics.jsonl`` and
            image grids go (``None``: nothing is written).
        overwrite: allow ``fit()`` to start afresh in an ``output_dir`` that already holds
            checkpoints (they are deleted); otherwise that is an error, to never lose work.
        seed: seeds every random number generator at the start of a run.
        checkpoint_every_steps: also checkpoint every this many steps (``None``: off).
        checkpoint_every_epochs: checkpoint every this many epochs (``None``: only at the end).
        keep_last: number of step checkpoints kept (the best model is kept separately).
        eval_every_epochs: evaluate ``eval_data`` every this many epochs (and at the end).
        nan_policy: on a non-finite loss or gradient, ``"raise"`` a
            :class:`~vaekit.training.NonFiniteLossError` or ``"skip"`` the step.
        max_consecutive_skips: with ``nan_policy="skip"``, give up (raise) after this many
            non-finite steps in a row.
        early_stopping_patience: stop when the monitored loss (``eval_loss``, else
            ``train_loss``) has not improved for this many evaluations (``None``: off).
        early_stopping_min_delta: improvement in nats that counts for early stopping.
        log_every_steps: write a step record to ``metrics.jsonl`` (and refresh the progress
            bar) every this many steps.
        progress: show tqdm progress bars; ``None`` shows them only when stderr is a terminal.
        save_images: write sample and reconstruction grids (PNG) every epoch to
            ``output_dir/images`` for image models.
        num_image_samples: images per grid.
        tensorboard: also log to TensorBoard in ``output_dir/tensorboard``.
        ddp_find_unused_parameters: passed to ``DistributedDataParallel`` (set it if your
            model has parameters that do not get a gradient every step).
    """

    max_epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    eval_batch_size: int | None = None
    drop_last: bool = False
    lr: float = 1e-3
    optimizer: str = "adam"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip_norm: float | None = None
    beta: float = 1.0
    beta_schedule: str = "constant"
    kl_warmup_steps: int = 0
    beta_cycle_steps: int | None = None
    beta_cycle_ratio: float = 0.5
    free_bits: float = 0.0
    iwae_samples: int = 1
    binarize: bool = False
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    matmul_precision: str | None = None
    data_path: str = "auto"
    num_workers: int = 0
    output_dir: str | None = None
    overwrite: bool = False
    seed: int = 0
    checkpoint_every_steps: int | None = None
    checkpoint_every_epochs: int | None = 1
    keep_last: int = 2
    eval_every_epochs: int = 1
    nan_policy: str = "raise"
    max_consecutive_skips: int = 100
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    log_every_steps: int = 50
    progress: bool | None = None
    save_images: bool = True
    num_image_samples: int = 64
    tensorboard: bool = False
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.output_dir, Path):
            self.output_dir = str(self.output_dir)
        if isinstance(self.adam_betas, list):
            self.adam_betas = tuple(self.adam_betas)
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                coerced = _coerce(value, hints[f.name], f.name)
            except ValueError as err:
                raise ValueError(f"TrainConfig.{err}") from None
            setattr(self, f.name, coerced)
        self._check_ranges()

    def _check_ranges(self) -> None:
        def positive(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if value < 1:
                hint = " (or None to turn it off)" if allow_none else ""
                raise ValueError(f"TrainConfig.{name} must be >= 1{hint}, got {value}")

        def non_negative(name: str) -> None:
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in options:
                raise ValueError(
                    f"TrainConfig.{name}={value!r} is not valid; choose one of "
                    f"{', '.join(repr(o) for o in options)}"
                )

        for name in ("max_epochs", "batch_size", "eval_every_epochs", "log_every_steps"):
            positive(name)
        for name in ("num_image_samples", "max_consecutive_skips"):
            positive(name)
        for name in (
            "max_steps",
            "eval_batch_size",
            "checkpoint_every_steps",
            "checkpoint_every_epochs",
            "early_stopping_patience",
            "beta_cycle_steps",
        ):
            positive(name, allow_none=True)
        for name in ("lr_warmup_steps", "kl_warmup_steps", "num_workers", "keep_last", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_last < 1:
            raise ValueError(
                f"TrainConfig.keep_last must be >= 1 so that a run can resume, got {self.keep_last}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr}")
        for name in ("weight_decay", "beta", "free_bits", "early_stopping_min_delta"):
            non_negative(name)
        if self.grad_clip_norm is not None and not (
            self.grad_clip_norm > 0 and math.isfinite(self.grad_clip_norm)
        ):
            raise ValueError(
                f"TrainConfig.grad_clip_norm must be > 0 (or None), got {self.grad_clip_norm}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.beta_cycle_ratio <= 1.0:
            raise ValueError(
                f"TrainConfig.beta_cycle_ratio must be in (0, 1], got {self.beta_cycle_ratio}"
            )
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(
                f"TrainConfig.adam_betas must be two numbers in [0, 1), got {self.adam_betas}"
            )
        if self.iwae_samples < 1:
            raise ValueError(f"TrainConfig.iwae_samples must be >= 1, got {self.iwae_samples}")
        choice("optimizer", OPTIMIZERS)
        choice("lr_schedule", LR_SCHEDULES)
        choice("beta_schedule", BETA_SCHEDULES)
        choice("precision", PRECISIONS)
        choice("nan_policy", NAN_POLICIES)
        choice("data_path", DATA_PATHS)
        if self.matmul_precision is not None:
            choice("matmul_precision", MATMUL_PRECISIONS)
        if self.kl_warmup_steps and self.beta_schedule != "linear":
            raise ValueError(
                f"TrainConfig.kl_warmup_steps={self.kl_warmup_steps} only applies to "
                f"beta_schedule='linear', but beta_schedule={self.beta_schedule!r}; set "
                "beta_schedule='linear' for a KL warm-up"
            )
        if self.beta_schedule == "linear" and self.kl_warmup_steps == 0:
            raise ValueError(
                "TrainConfig.beta_schedule='linear' needs kl_warmup_steps >= 1 (the length of "
                "the KL warm-up in steps)"
            )
        if not self.device.strip():
            raise ValueError("TrainConfig.device must be 'auto' or a device name, got ''")

    # ---- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (tuples become lists; :meth:`from_dict` undoes it)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuilds a config from :meth:`to_dict` output.

        Raises:
            ValueError: for unknown keys or values of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a TrainConfig is built from a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid keys are {sorted(names)}")
        return cls(**data)

    def to_json(self, indent: int | None = 2) -> str:
        """The config as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Rebuilds a config from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))
