"""The Trainer: one training loop for any VAE, on any device, that never loses work.

    >>> import torch, vaekit
    >>> from torch.utils.data import TensorDataset
    >>> model = vaekit.MLPVAE(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,))
    >>> data = TensorDataset(torch.rand(64, 1, 8, 8))
    >>> trainer = vaekit.Trainer(model, data, config=vaekit.TrainConfig(
    ...     max_epochs=2, batch_size=16, device="cpu", progress=False))
    >>> history = trainer.fit()
    >>> [entry["epoch"] for entry in history]
    [1, 2]

The trainer only calls ``model(x, beta=..., free_bits=..., iwae_samples=...)`` (with
``y=labels`` for conditional models) and ``loss.backward()``, so it trains every subclass of
:class:`vaekit.VAE`. Data are a map-style ``Dataset`` or a ``DataLoader`` yielding a tensor or
an ``(x, label)`` pair. In-memory tensor datasets take a fast path: they are validated once,
moved to the device once and batched by index, with no per-example Python.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vaekit.models.base import VAE
from vaekit.objectives import BetaSchedule, make_beta_schedule
from vaekit.training import checkpoint as ckpt
from vaekit.training.batches import DataFeeder, DataSource, check_data_object
from vaekit.training.callbacks import (
    Callback,
    EarlyStopping,
    ImageGridSaver,
    JSONLLogger,
    TensorBoardLogger,
)
from vaekit.training.config import TrainConfig
from vaekit.training.device import resolve_device
from vaekit.training.distributed import DistInfo, env_world_size, setup_distributed
from vaekit.training.rng import derived_seed, get_device_rng, isolated_rng, set_device_rng

__all__ = ["NonFiniteLossError", "Trainer", "lr_factor"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or gradient (the step was not applied).

    Attributes:
        step: the step (0-based count of steps before it) whose loss or gradient was not finite.
        epoch: the 1-based epoch it happened in.
        batch_index: the batch's index within the epoch.
        last_checkpoint: the last good checkpoint directory, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        epoch: int,
        batch_index: int,
        last_checkpoint: Path | None,
    ):
        super().__init__(message)
        self.step = step
        self.epoch = epoch
        self.batch_index = batch_index
        self.last_checkpoint = last_checkpoint


def lr_factor(
    step: int,
    *,
    warmup_steps: int,
    schedule: str,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning-rate multiplier used at optimisation step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``; then 1
    (``"constant"``) or a cosine decay from 1 at ``warmup_steps`` towards ``min_lr_ratio`` at
    ``total_steps`` (``"cosine"``), staying there afterwards.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {schedule!r}; valid ones are 'constant', 'cosine'")
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _use_lazy_guard(device: torch.device, optimizer: torch.optim.Optimizer, scaler: Any) -> bool:
    """Whether the NaN guard runs without a host sync per step.

    On accelerators a per-step ``bool(finite)`` would stall the queue of kernels; there a
    non-finite step is instead masked on the device (fused Adam's ``found_inf`` skips the
    update) and reported at the next check. On the CPU the check costs nothing, so the
    guard acts at once. Loss scaling (fp16) has its own ``found_inf``, so it keeps the sync.
    """
    fused = bool(optimizer.defaults.get("fused"))
    return device.type != "cpu" and fused and scaler is None


def _cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return True


class Trainer:
    """Trains a VAE in place.

    Args:
        model: any :class:`vaekit.VAE` (including your own subclasses). It is moved to the
            configured device and trained in place.
        train_data: a map-style ``Dataset`` or a ``DataLoader`` yielding ``x`` or
            ``(x, label)``; ``x`` is ``(B, *model.input_shape)``.
        eval_data: the same kinds of data, evaluated (negative ELBO in nats) every
            ``eval_every_epochs``; it selects the best model and drives early stopping.
        config: a :class:`TrainConfig`.
        callbacks: :class:`~vaekit.training.Callback` instances, called after the built-in
            ones (the JSONL log, TensorBoard, image grids, early stopping).

    Attributes:
        model: the model being trained.
        config: the run's :class:`TrainConfig`.
        device: the resolved ``torch.device``.
        step: optimisation steps taken (skipped non-finite steps included).
        epoch: completed epochs.
        history: one dict of metrics per epoch (see :meth:`fit`).
        output_dir: ``Path`` of the run directory, or None.
        should_stop: set it to True (e.g. from a callback) to end training after this step.
        rank / world_size / is_main_process: this process's place in a ``torchrun`` job.
    """

    def __init__(
        self,
        model: VAE,
        train_data: Dataset | DataLoader,
        eval_data: Dataset | DataLoader | None = None,
        config: TrainConfig | None = None,
        callbacks: Iterable[Callback] = (),
    ):
        if not isinstance(model, VAE):
            raise TypeError(
                f"Trainer trains a vaekit.VAE (or a subclass of it), got {type(model).__name__}"
            )
        if config is None:
            config = TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a vaekit.TrainConfig, got {type(config).__name__}")
        self.model = model
        self.config = config
        self.train_data = train_data
        self.eval_data = eval_data
        self.callbacks: list[Callback] = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be vaekit.training.Callback instances, got {type(cb).__name__}"
                )
        check_data_object(train_data, "train_data")
        if eval_data is not None:
            check_data_object(eval_data, "eval_data")
        self.device = self._resolve_device()
        self.output_dir: Path | None = Path(config.output_dir) if config.output_dir else None
        if self.output_dir is not None:
            self._check_writable(self.output_dir)
        if config.tensorboard and self.output_dir is None:
            raise ValueError("tensorboard=True needs an output_dir for the event files")
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.should_stop = False
        self._dist = DistInfo()
        self._data = DataFeeder(model, self.device, config)
        self._last_checkpoint: Path | None = None
        self._best_eval_loss = math.inf
        self._lock: ckpt.RunLock | None = None

    # ---- public properties -----------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self._dist.rank

    @property
    def world_size(self) -> int:
        return self._dist.world_size

    @property
    def is_main_process(self) -> bool:
        return self._dist.is_main

    @property
    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint written or resumed from in this run."""
        return self._last_checkpoint

    def preview_batch(self, n: int) -> tuple[Tensor, Tensor | None] | None:
        """Up to ``n`` examples ``(x, labels)`` on the device, from the eval data if there are
        any, else the training data (used for reconstruction grids)."""
        data = self.eval_data if self.eval_data is not None else self.train_data
        source = self._data.sources.get(id(data))
        if source is None or n < 1:
            return None
        first = self._data.first_items(source, n)
        if first is None:
            return None
        x, labels = first
        return x, (labels if self.model.num_classes is not None else None)

    # ---- set-up checks ---------------------------------------------------------------------

    def _resolve_device(self) -> torch.device:
        device = resolve_device(self.config.device)
        world = env_world_size()
        if world > 1 and device.type != "cpu":
            spec = self.config.device.strip().lower()
            if spec == "auto" or ":" not in spec:  # one accelerator per process
                local_rank = int(os.environ.get("LOCAL_RANK", "0"))
                device = resolve_device(f"{device.type}:{local_rank}")
        return device

    @staticmethod
    def _check_writable(path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".vaekit-write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise ValueError(
                f"output_dir {str(path)!r} is not a writable directory ({err.strerror or err}); "
                "choose a directory you can write to, or output_dir=None to write nothing"
            ) from err

    # ---- data ------------------------------------------------------------------------------

    # ---- optimisation pieces ---------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.config.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        kwargs: dict[str, Any] = {
            "lr": cfg.lr,
            "betas": cfg.adam_betas,
            "weight_decay": cfg.weight_decay,
        }
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            return cls(params, foreach=True, **kwargs)

    def _build_beta_schedule(self, total_steps: int) -> BetaSchedule:
        cfg = self.config
        if cfg.beta_schedule == "constant":
            return make_beta_schedule("constant", beta=cfg.beta)
        if cfg.beta_schedule == "linear":
            return make_beta_schedule("linear", warmup_steps=cfg.kl_warmup_steps, beta_max=cfg.beta)
        cycle = cfg.beta_cycle_steps or max(1, total_steps // 4)
        return make_beta_schedule(
            "cyclical", cycle_steps=cycle, ratio=cfg.beta_cycle_ratio, beta_max=cfg.beta
        )

    # ---- RNG state -------------------------------------------------------------------------

    def _seed_everything(self) -> None:
        seed = derived_seed(self.config.seed, "global", self.rank) if self.rank else None
        base = self.config.seed if seed is None else seed
        torch.manual_seed(base)
        random.seed(base)
        np.random.seed(base % 2**32)

    def _rng_tensors(self) -> dict[str, Tensor]:
        states = {"torch_cpu": torch.get_rng_state()}
        if self.device.type != "cpu":
            states["device"] = get_device_rng(self.device).cpu()
        if self._binarize_gen is not None:
            states["binarize"] = self._binarize_gen.get_state().cpu()
        return states

    def _gather_rng(self) -> dict[str, dict[str, Tensor]]:
        """Every rank's generator states (one all_gather under DDP)."""
        local = self._rng_tensors()
        if not self._dist.enabled:
            return {"rank0": local}
        names = sorted(local)
        sizes = [local[k].numel() for k in names]
        flat = torch.cat([local[k].view(torch.uint8).flatten() for k in names])
        comm_device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        flat = flat.to(comm_device)
        gathered = [torch.empty_like(flat) for _ in range(self.world_size)]
        dist.all_gather(gathered, flat)
        out = {}
        for r, buf in enumerate(gathered):
            parts = torch.split(buf.cpu(), sizes)
            out[f"rank{r}"] = dict(zip(names, parts))
        return out

    def _restore_rng(self, state: dict[str, Any]) -> None:
        ranks = state["rng"]
        mine = ranks.get(f"rank{self.rank}")
        if mine is None or state.get("world_size", 1) != self.world_size:
            logger.warning(
                "the checkpoint was written by %d process(es) and this run has %d; random "
                "number generators are reseeded, so the run continues but is not bit-exact",
                state.get("world_size", 1),
                self.world_size,
            )
            torch.manual_seed(derived_seed(self.config.seed, "resume", self.rank, self.step))
            return
        torch.set_rng_state(mine["torch_cpu"])
        if self.device.type != "cpu" and "device" in mine:
            set_device_rng(self.device, mine["device"])
        if self._binarize_gen is not None and "binarize" in mine:
            self._binarize_gen.set_state(mine["binarize"])
        if self.rank == 0:
            random.setstate(state["python_rng"])
            np.random.set_state(state["numpy_rng"])

    # ---- checkpoints -----------------------------------------------------------------------

    def _callback_states(self) -> dict[str, Any]:
        out = {}
        for i, cb in enumerate(self._all_callbacks):
            if hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict"):
                out[f"{i}:{type(cb).__name__}"] = cb.state_dict()
        return out

    def _training_state(self, batch_in_epoch: int) -> dict[str, Any]:
        rng = self._gather_rng()
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "step": self.step,
            "epoch": self._epoch_index,
            "batch_in_epoch": batch_in_epoch,
            "world_size": self.world_size,
            "train_config": self.config.to_dict(),
            "history": self.history,
            "epoch_acc": self._acc.detach().clone(),
            "epoch_counts": {"examples": self._acc_examples, "skipped": self._epoch_skipped},
            "total_skipped": self._total_skipped,
            "consecutive_skips": self._consecutive_run(),
            "best_eval_loss": self._best_eval_loss,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "rng": rng,
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "loader_epoch_rng": self._data.loader_epoch_rng if batch_in_epoch > 0 else None,
            "loader_generator": self._user_loader_generator_state(),
            "callbacks": self._callback_states(),
        }

    def _user_loader_generator_state(self) -> Tensor | None:
        loader = self.train_data if isinstance(self.train_data, DataLoader) else None
        if loader is not None and loader.generator is not None:
            return loader.generator.get_state()
        return None

    def _check_weights_finite(self) -> None:
        params = [p.detach() for p in self.model.parameters()]
        if params and not bool(torch.isfinite(torch.nn.utils.get_total_norm(params))):
            bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
            raise NonFiniteLossError(
                f"refusing to save non-finite weights at step {self.step} ({', '.join(bad[:5])} "
                f"hold NaN/Inf); the last good checkpoint is {self._last_checkpoint}",
                step=self.step,
                epoch=self._epoch_index + 1,
                batch_index=-1,
                last_checkpoint=self._last_checkpoint,
            )

    def save_checkpoint(self, batch_in_epoch: int = 0) -> Path | None:
        """Writes a checkpoint of the current state (on rank 0; every rank must call it).

        Returns:
            The checkpoint directory (None without an output_dir or on other ranks).
        """
        self._check_guard()
        if self.output_dir is None:
            return None
        self._check_weights_finite()
        state = self._training_state(batch_in_epoch)  # collective under DDP
        self._last_saved_step = self.step
        if not self.is_main_process:
            name = ckpt.checkpoint_name(self.step)
            self._last_checkpoint = self.output_dir / "checkpoints" / name
            return None
        path = ckpt.write_checkpoint(
            self.output_dir / "checkpoints",
            self.step,
            self.model,
            state,
            keep_last=self.config.keep_last,
        )
        self._last_checkpoint = path
        logger.info("checkpoint written: %s", path)
        return path

    def _savable_with_hub(self) -> bool:
        """Whether ``save_pretrained`` accepts the model (its class must be registered)."""
        from vaekit.models.base import get_model_class

        cls = type(self.model)
        try:
            return bool(cls.model_type) and get_model_class(cls.model_type) is cls
        except ValueError:
            return False

    def _model_card(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        cfg = self.config
        card: dict[str, Any] = {
            "training": {
                "trainer": "vaekit.Trainer",
                "epochs": len(self.history),
                "steps": self.step,
                "batch_size": cfg.batch_size * self.world_size,
                "optimizer": cfg.optimizer,
                "lr": cfg.lr,
                "lr_schedule": cfg.lr_schedule,
                "beta": cfg.beta,
                "beta_schedule": cfg.beta_schedule,
                "free_bits": cfg.free_bits,
                "iwae_samples": cfg.iwae_samples,
                "binarize": cfg.binarize,
                "precision": cfg.precision,
                "seed": cfg.seed,
            },
        }
        name = getattr(self.train_data, "name", None)
        if isinstance(name, str) and name:
            card["datasets"] = [name]
        if metrics:
            card["metrics"] = {
                f"{k} (nats)": float(v)
                for k, v in metrics.items()
                if k in ("train_loss", "eval_loss", "kl", "log_px", "eval_kl", "eval_log_px")
                and isinstance(v, (int, float))
                and math.isfinite(v)
            }
        return card

    def _write_model(self, directory: Path, metrics: dict[str, Any] | None) -> None:
        """Writes a ``from_pretrained``-loadable model (save_pretrained's files)."""
        if self._savable_with_hub():
            from vaekit import hub

            hub.save_pretrained(self.model, directory, model_card=self._model_card(metrics))
        else:  # an unregistered class: keep the weights anyway (see the warning in _setup)
            ckpt.write_model_files(self.model, directory, atomic=True)

    def _save_final_model(self) -> None:
        if self.output_dir is None or not self.is_main_process:
            return
        self._check_weights_finite()
        self._write_model(self.output_dir, self.history[-1] if self.history else None)
        logger.info("final model written to %s", self.output_dir)

    def _save_best(self, metrics: dict[str, Any]) -> None:
        loss = metrics.get("eval_loss")
        if loss is None or not math.isfinite(loss) or loss >= self._best_eval_loss:
            return
        self._best_eval_loss = float(loss)
        if self.output_dir is None or not self.is_main_process:
            return
        self._check_weights_finite()
        ckpt.write_model_dir(
            lambda tmp: self._write_model(tmp, metrics),
            self.output_dir / "best",
            extra={"metrics.json": metrics},
        )

    def _prepare_output_dir(self, resuming: bool) -> None:
        out = self.output_dir
        if out is None or not self.is_main_process:
            return
        existing = ckpt.list_checkpoints(out / "checkpoints")
        if existing and not resuming:
            if not self.config.overwrite:
                raise ValueError(
                    f"output_dir {str(out)!r} already holds checkpoints of a previous run (up to "
                    f"{existing[-1].name}); pass fit(resume_from={str(out)!r}) to continue it, "
                    "choose a new output_dir, or set overwrite=True to start afresh"
                )
            for name in ("checkpoints", "best", "images", "tensorboard"):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in ("metrics.jsonl", "config.json", "model.safetensors", "README.md"):
                (out / name).unlink(missing_ok=True)
        ckpt.atomic_write_bytes(out / "train_config.json", self.config.to_json().encode())

    def _trim_metrics_log(self) -> None:
        """Drops log records written after the checkpoint a run resumes from: step records
        past its step and epoch records that are not in its history."""
        if self.output_dir is None or not self.is_main_process:
            return
        path = self.output_dir / "metrics.jsonl"
        if not path.exists():
            return
        epochs = {(h["epoch"], h["step"]) for h in self.history}
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if record.get("type") == "epoch":
                keep = (record.get("epoch"), record.get("step")) in epochs
            else:
                keep = record.get("step", 0) <= self.step
            if keep:
                kept.append(line)
        ckpt.atomic_write_bytes(path, ("\n".join(kept) + "\n" if kept else "").encode())

    def _resume(self, resume_from: str | Path) -> None:
        root = Path(resume_from)
        if not root.exists():
            raise FileNotFoundError(f"resume_from={str(root)!r} does not exist")
        path = ckpt.find_latest_checkpoint(root)
        if path is None:
            raise FileNotFoundError(
                f"no valid checkpoint found in {str(root)!r} (looked for "
                "checkpoints/step-XXXXXXXX directories with a manifest.json); start without "
                "resume_from, or point it at a run's output_dir"
            )
        model_config, weights, state = ckpt.read_checkpoint(path)
        mine = ckpt.model_config_dict(self.model)
        mine.pop("vaekit_version", None)
        model_config.pop("vaekit_version", None)  # informative only
        if model_config != mine:
            keys = set(mine) | set(model_config)
            diff = sorted(k for k in keys if mine.get(k) != model_config.get(k))
            raise ValueError(
                f"the checkpoint {path} is for a different model (config differs in {diff}); "
                "build the model with the same config to resume"
            )
        saved_cfg = state.get("train_config", {})
        changed = sorted(k for k, v in self.config.to_dict().items() if saved_cfg.get(k) != v)
        if changed:
            logger.info("resuming with changed TrainConfig fields: %s", ", ".join(changed))
        self.model.load_state_dict({k: v.to(self.device) for k, v in weights.items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self._scaler is not None and state.get("scaler") is not None:
            self._scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._epoch_index = int(state["epoch"])
        self.epoch = self._epoch_index
        self._resume_batch = int(state["batch_in_epoch"])
        self.history = list(state["history"])
        self._acc = state["epoch_acc"].to(self.device, torch.float32)
        counts = state["epoch_counts"]
        self._acc_examples = int(counts["examples"])
        self._epoch_skipped = int(counts["skipped"])
        self._total_skipped = int(state["total_skipped"])
        self._consecutive_skips = int(state["consecutive_skips"])
        self._guard[2] = self._guard[3] = self._consecutive_skips
        self._device_step.fill_(self.step)
        self._best_eval_loss = float(state["best_eval_loss"])
        self._data.loader_epoch_rng = state.get("loader_epoch_rng")
        generator_state = state.get("loader_generator")
        loader = self.train_data if isinstance(self.train_data, DataLoader) else None
        if loader is not None and loader.generator is not None and generator_state is not None:
            loader.generator.set_state(generator_state)
        saved_callbacks = state.get("callbacks", {})
        for key in self._callback_states():
            if key in saved_callbacks:
                index = int(key.split(":", 1)[0])
                self._all_callbacks[index].load_state_dict(saved_callbacks[key])  # type: ignore[attr-defined]
        self._restore_rng(state)
        self._last_checkpoint = path
        self._last_saved_step = self.step
        logger.info("resumed from %s (step %d, epoch %d)", path, self.step, self._epoch_index + 1)

    # ---- the loop --------------------------------------------------------------------------

    def fit(self, resume_from: str | Path | None = None) -> list[dict[str, Any]]:
        """Trains the model.

        Args:
            resume_from: a run's ``output_dir`` (or one of its checkpoints) to continue from
                the newest valid checkpoint; the run then continues bit-exactly on the CPU.

        Returns:
            The history: one dict per epoch with ``epoch``, ``step``, ``train_loss`` (the
            training objective, nats per example), ``kl``, ``log_px``, ``beta``, ``lr`` (at the
            epoch's last step), ``grad_norm`` (mean), ``images_per_s``, ``epoch_time_s``,
            ``skipped_steps`` (non-finite steps skipped this epoch), and with eval data
            ``eval_loss`` (negative ELBO), ``eval_kl``, ``eval_log_px``.

        Raises:
            NonFiniteLossError: a loss or gradient became NaN/Inf with ``nan_policy="raise"``.
            ValueError / TypeError: for data or settings that cannot work, before training.
            FileNotFoundError: ``resume_from`` holds no valid checkpoint.
            OutputDirLockedError: another live run is writing into the same ``output_dir``.
        """
        self._dist = setup_distributed(self.device)
        self._data.rank, self._data.world_size = self._dist.rank, self._dist.world_size
        if self.device.type != "cpu" and hasattr(torch, "accelerator"):
            torch.accelerator.set_device_index(self.device.index)
        self._validate_inputs_before = self.model.validate_inputs
        self._matmul_before = torch.get_float32_matmul_precision()
        self._all_callbacks: list[Callback] = []
        self._pbar: Any = None
        try:
            self._setup(resume_from)
            self._run()
        finally:
            self._teardown()
        return self.history

    def _setup(self, resume_from: str | Path | None) -> None:
        cfg = self.config
        model = self.model
        if cfg.matmul_precision is not None:
            torch.set_float32_matmul_precision(cfg.matmul_precision)
        model.to(self.device)
        model.train()
        # Data: validated once here, so that bad data fail before any work is done.
        self._train_source = self._data.source(self.train_data, "train_data")
        self._eval_source = (
            self._data.source(self.eval_data, "eval_data") if self.eval_data is not None else None
        )
        if self.world_size > 1 and self._train_source.kind == "loader":
            sampler = getattr(self.train_data, "sampler", None)
            if not hasattr(sampler, "set_epoch"):
                logger.warning(
                    "train_data is a DataLoader without a DistributedSampler: every process "
                    "sees the same batches; pass a Dataset to let the trainer shard it"
                )
        self._steps_per_epoch = self._data.batches_per_epoch(self._train_source)
        if self._steps_per_epoch == 0:
            raise ValueError(
                f"train_data has {self._train_source.num_examples} examples per process, fewer "
                f"than batch_size={cfg.batch_size} with drop_last=True: no batch to train on"
            )
        self._total_steps = cfg.max_epochs * self._steps_per_epoch
        if cfg.max_steps is not None:
            self._total_steps = min(self._total_steps, cfg.max_steps)
        # Optimisation.
        self.optimizer = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            functools.partial(
                lr_factor,
                warmup_steps=cfg.lr_warmup_steps,
                schedule=cfg.lr_schedule,
                total_steps=self._total_steps,
                min_lr_ratio=cfg.min_lr_ratio,
            ),
        )
        self._scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self._beta_schedule = self._build_beta_schedule(self._total_steps)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._binarize_gen: torch.Generator | None = None
        if cfg.binarize or self._train_source.dynamic_binarize:
            self._binarize_gen = torch.Generator(device=self.device).manual_seed(
                derived_seed(cfg.seed, "binarize", self.rank)
            )
        # The module that is called for training: DDP and/or compiled around the model.
        forward: nn.Module = model
        if self._dist.enabled:
            forward = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.ddp_find_unused_parameters,
            )
        if cfg.compile:
            forward = torch.compile(forward)  # type: ignore[assignment]
        self._forward = forward
        # Run state.
        self.step = 0
        self._epoch_index = 0
        self.epoch = 0
        self._resume_batch = 0
        self.history = []
        self.should_stop = False
        # Sums over the epoch's good steps: loss * B, kl, log_px, grad norm, examples, steps.
        self._acc = torch.zeros(6, device=self.device)
        self._acc_examples = 0  # every example processed, for images/s
        self._lazy_guard = _use_lazy_guard(self.device, self.optimizer, self._scaler)
        self._guard = torch.tensor([0, -1, 0, 0], dtype=torch.int64, device=self.device)
        self._device_step = torch.zeros((), dtype=torch.int64, device=self.device)
        self._positions: dict[int, tuple[int, int]] = {}
        self._epoch_skipped = 0
        self._total_skipped = 0
        self._consecutive_skips = 0
        self._best_eval_loss = math.inf
        self._data.loader_epoch_rng = None
        self._last_saved_step = -1
        if resume_from is not None and self.output_dir is None:
            root = Path(resume_from)
            if (root / "checkpoints").is_dir():
                self.output_dir = root
            elif root.parent.name == "checkpoints":
                self.output_dir = root.parent.parent
            if self.output_dir is not None:
                logger.info("continuing to write into %s", self.output_dir)
                self._check_writable(self.output_dir)
        if cfg.precision == "bf16" and self.device.type == "cpu" and not _cpu_has_fast_bf16():
            logger.warning(
                "precision='bf16' on a CPU without native bfloat16 instructions (avx512_bf16 or "
                "AMX): oneDNN emulates them and matrix products run many times slower than in "
                "fp32; use precision='fp32' on this machine"
            )
        if self.output_dir is not None and not self._savable_with_hub():
            logger.warning(
                "%s is not registered under its own model_type (%r), so from_pretrained cannot "
                "load the models this run writes; decorate the class with "
                "@vaekit.register_model and give it a unique model_type",
                type(model).__name__,
                type(model).model_type,
            )
        if self.output_dir is not None and self.is_main_process:
            self._lock = ckpt.RunLock(self.output_dir)
            self._lock.acquire()  # before anything in output_dir is touched
        self._prepare_output_dir(resuming=resume_from is not None)
        self._all_callbacks = self._builtin_callbacks() + self.callbacks
        if resume_from is not None:
            self._resume(resume_from)
            self._trim_metrics_log()
        else:
            self._seed_everything()
            if self._binarize_gen is not None:
                self._binarize_gen.manual_seed(derived_seed(cfg.seed, "binarize", self.rank))
        # Inputs were validated above (memory) or are checked per batch (loaders).
        model.validate_inputs = False

    def _builtin_callbacks(self) -> list[Callback]:
        cfg = self.config
        out: list[Callback] = []
        if self.output_dir is not None and self.is_main_process:
            out.append(JSONLLogger(self.output_dir / "metrics.jsonl"))
            if cfg.tensorboard:
                out.append(TensorBoardLogger(self.output_dir / "tensorboard"))
            shape = self.model.input_shape
            if cfg.save_images and len(shape) == 3 and shape[0] in (1, 3):
                out.append(
                    ImageGridSaver(self.output_dir / "images", cfg.num_image_samples, seed=cfg.seed)
                )
        if cfg.early_stopping_patience is not None:
            out.append(EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta))
        return out

    def _teardown(self) -> None:
        self.model.validate_inputs = self._validate_inputs_before
        if self.config.matmul_precision is not None:
            torch.set_float32_matmul_precision(self._matmul_before)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        for cb in self._all_callbacks:
            try:
                cb.close()
            except Exception:  # closing must not hide the error that ended training
                logger.exception("error while closing callback %s", type(cb).__name__)
        self._forward = None  # type: ignore[assignment]
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _call(self, hook: str, metrics: dict[str, Any]) -> None:
        for cb in self._all_callbacks:
            getattr(cb, hook)(self, metrics)

    def _progress_enabled(self) -> bool:
        if not self.is_main_process:
            return False
        if self.config.progress is not None:
            return self.config.progress
        return sys.stderr.isatty()

    def _done(self) -> bool:
        cfg = self.config
        return self.should_stop or (cfg.max_steps is not None and self.step >= cfg.max_steps)

    def _run(self) -> None:
        cfg = self.config
        self._call("on_fit_start", {"step": self.step, "epoch": self._epoch_index})
        from tqdm import tqdm

        start_epoch = self._epoch_index
        for epoch in range(start_epoch, cfg.max_epochs):
            if self._done():
                break
            self._epoch_index = epoch
            start_batch = self._resume_batch if epoch == start_epoch else 0
            if start_batch == 0:
                self._acc.zero_()
                self._acc_examples = self._epoch_skipped = 0
            self._pbar = tqdm(
                total=self._steps_per_epoch,
                initial=start_batch,
                desc=f"epoch {epoch + 1}/{cfg.max_epochs}",
                disable=not self._progress_enabled(),
                leave=False,
                dynamic_ncols=True,
            )
            batch_index = start_batch
            timed_examples, timer = 0, time.perf_counter()
            # Python floats: a .cpu() of a CPU tensor would alias the running accumulator.
            self._window = (self._acc.tolist(), self._acc_examples, time.perf_counter())
            batches = self._data.train_batches(self._train_source, epoch, start_batch)
            for batch_index, x, y in batches:
                self._train_step(x, y, batch_index)
                timed_examples += x.shape[0]
                self._pbar.update(1)
                if self.step % cfg.log_every_steps == 0:
                    self._log_window()
                if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                    self.save_checkpoint(batch_in_epoch=batch_index + 1)
                if self._dist.enabled:
                    flag = torch.tensor([float(self.should_stop)], device=self._comm_device())
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    self.should_stop = bool(flag.item())
                if self._done():
                    break
            else:
                batch_index = self._steps_per_epoch - 1
            elapsed = time.perf_counter() - timer
            self._pbar.close()
            self._pbar = None
            finished_epoch = batch_index + 1 >= self._steps_per_epoch
            self._end_epoch(epoch, finished_epoch, batch_index + 1, timed_examples, elapsed)
            if self._done():
                break
        last = self.history[-1] if self.history else {}
        if self._last_saved_step != self.step:  # e.g. stopped before the first epoch ended
            self.save_checkpoint(batch_in_epoch=getattr(self, "_batches_done", 0))
        self._save_final_model()
        if self._dist.enabled:
            dist.barrier()
        self._call("on_fit_end", last)

    def _comm_device(self) -> torch.device:
        if self._dist.enabled and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu") if self._dist.enabled else self.device

    def _train_step(self, x: Tensor, y: Tensor | None, batch_index: int) -> None:
        cfg = self.config
        if self._binarize_gen is not None:
            x = torch.bernoulli(x, generator=self._binarize_gen)
        beta = self._beta_schedule(self.step)
        lr = self.optimizer.param_groups[0]["lr"]
        kwargs: dict[str, Any] = {
            "beta": beta,
            "free_bits": cfg.free_bits,
            "iwae_samples": cfg.iwae_samples,
        }
        if self.model.num_classes is not None:
            kwargs["y"] = y
        with self._autocast():
            out = self._forward(x, **kwargs)
        loss = out.loss
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grads = [p.grad for p in self._params if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads) if grads else loss.new_zeros(())
        finite = torch.isfinite(loss.detach())
        if self._scaler is None:  # with fp16 loss scaling, Inf gradients are the scaler's job
            finite = finite & torch.isfinite(grad_norm)
        if self._dist.enabled:
            flag = finite.float().reshape(1).to(self._comm_device())
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = (flag > 0).to(self.device).reshape(())
        if self._lazy_guard:
            # No host sync: a bad step is masked on the device (fused Adam skips it) and
            # reported at the next check (every log_every_steps, epoch end, checkpoint).
            self._positions[self.step] = (self._epoch_index + 1, batch_index)
            self._record_guard(finite)
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
        elif not bool(finite):
            self._non_finite_step(loss, grad_norm, batch_index)
            return
        else:
            self._consecutive_skips = 0
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self._params, cfg.grad_clip_norm, grad_norm)
        if self._scaler is not None:
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            b = x.shape[0]
            terms = torch.stack(
                [
                    loss.detach().float() * b,
                    out.kl.detach().float().sum(),
                    out.log_px.detach().float().sum(),
                    grad_norm.detach().float(),
                    loss.new_full((), b, dtype=torch.float32),
                    loss.new_ones((), dtype=torch.float32),
                ]
            )
            if self._lazy_guard:  # bad steps count for nothing in the means
                terms = torch.where(finite, terms, torch.zeros_like(terms))
            self._acc += terms
        self._acc_examples += x.shape[0]
        self.step += 1
        self._last_beta, self._last_lr = beta, lr
        self._call(
            "on_step_end",
            {
                "step": self.step,
                "epoch": self._epoch_index + 1,
                "batch": batch_index,
                "loss": loss.detach(),
                "beta": beta,
                "lr": lr,
            },
        )

    def _record_guard(self, finite: Tensor) -> None:
        """Device-side bookkeeping of non-finite steps: count, first step, run lengths."""
        g = self._guard  # int64 (4,): bad steps, first bad step (-1: none), run, longest run
        bad = (~finite).to(torch.int64)
        g[0] += bad
        g[1] = torch.where((g[1] < 0) & (bad > 0), self._device_step, g[1])
        g[2] = (g[2] + 1) * bad
        g[3] = torch.maximum(g[3], g[2])
        self._device_step += 1

    def _check_guard(self) -> None:
        """Reports the non-finite steps recorded on the device since the last check."""
        if not self._lazy_guard:
            return
        bad, first, run, longest = self._guard.tolist()
        positions, self._positions = self._positions, {}
        if bad == 0:
            return
        cfg = self.config
        epoch, batch = positions.get(first, (self._epoch_index + 1, -1))
        where = f"step {first} (epoch {epoch}, batch {batch})"
        last = self._last_checkpoint_text()
        if cfg.nan_policy == "raise" or longest > cfg.max_consecutive_skips:
            reason = (
                f"{longest} non-finite steps in a row"
                if cfg.nan_policy == "skip"
                else "non-finite loss or gradient"
            )
            raise NonFiniteLossError(
                f"{reason} at {where}, detected at step {self.step}. No non-finite step was "
                f"applied; the last good checkpoint is {last}. Lower lr, set grad_clip_norm, "
                "check the data for extreme values, or use nan_policy='skip'.",
                step=first,
                epoch=epoch,
                batch_index=batch,
                last_checkpoint=self._last_checkpoint,
            )
        logger.warning("skipped %d non-finite step(s), the first at %s", bad, where)
        self._epoch_skipped += bad
        self._total_skipped += bad
        self._guard.copy_(torch.tensor([0, -1, run, run], device=self._guard.device))

    def _last_checkpoint_text(self) -> str:
        if self._last_checkpoint is not None:
            return str(self._last_checkpoint)
        if self.output_dir is None:
            return "none (set output_dir to keep checkpoints)"
        return f"none: no checkpoint was written in {str(self.output_dir)!r} yet"

    def _consecutive_run(self) -> int:
        return int(self._guard[2]) if self._lazy_guard else self._consecutive_skips

    def _non_finite_step(self, loss: Tensor, grad_norm: Tensor, batch_index: int) -> None:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        where = f"step {self.step} (epoch {self._epoch_index + 1}, batch {batch_index})"
        values = f"loss={loss.detach().float().item()}, grad_norm={grad_norm.float().item()}"
        last = self._last_checkpoint_text()
        self._consecutive_skips += 1
        if cfg.nan_policy == "raise" or self._consecutive_skips > cfg.max_consecutive_skips:
            reason = (
                f"{self._consecutive_skips} non-finite steps in a row"
                if cfg.nan_policy == "skip"
                else "non-finite loss or gradient"
            )
            raise NonFiniteLossError(
                f"{reason} at {where}: {values}. The step was not applied; the last good "
                f"checkpoint is {last}. Lower lr, set grad_clip_norm, check the data for "
                "extreme values, or use nan_policy='skip'.",
                step=self.step,
                epoch=self._epoch_index + 1,
                batch_index=batch_index,
                last_checkpoint=self._last_checkpoint,
            )
        logger.warning("skipping %s: %s", where, values)
        self._epoch_skipped += 1
        self._total_skipped += 1
        self.scheduler.step()
        self.step += 1
        self._call(
            "on_step_end",
            {
                "step": self.step,
                "epoch": self._epoch_index + 1,
                "batch": batch_index,
                "skipped": True,
                "beta": self._beta_schedule(self.step - 1),
                "lr": self.optimizer.param_groups[0]["lr"],
            },
        )

    def _log_window(self) -> None:
        self._check_guard()
        acc = self._acc.tolist()  # waits for the device, every log_every_steps steps only
        prev_acc, prev_examples, prev_time = self._window
        now = time.perf_counter()
        processed = self._acc_examples - prev_examples
        self._window = (acc, self._acc_examples, now)
        diff = [a - b for a, b in zip(acc, prev_acc)]
        n = diff[4]  # examples of the good steps in the window
        if n <= 0:
            return
        metrics = {
            "step": self.step,
            "epoch": self._epoch_index + 1,
            "loss": diff[0] / n,
            "kl": diff[1] / n,
            "log_px": diff[2] / n,
            "beta": getattr(self, "_last_beta", float("nan")),
            "lr": getattr(self, "_last_lr", float("nan")),
            "images_per_s": processed * self.world_size / max(now - prev_time, 1e-9),
        }
        if self._pbar is not None:
            self._pbar.set_postfix(
                loss=f"{metrics['loss']:.2f}",
                kl=f"{metrics['kl']:.2f}",
                img_s=f"{metrics['images_per_s']:.0f}",
                refresh=False,
            )
        self._call("on_log", metrics)

    def _end_epoch(
        self, epoch: int, finished: bool, batches_done: int, timed: int, elapsed: float
    ) -> None:
        cfg = self.config
        self._check_guard()
        acc = self._acc.detach().clone()
        counts = torch.tensor([self._epoch_skipped, timed], dtype=torch.float64)
        if self._dist.enabled:
            acc = acc.to(self._comm_device())
            dist.all_reduce(acc)
            c = counts.to(self._comm_device())
            dist.all_reduce(c)
            counts = c.cpu()
            elapsed_t = torch.tensor([elapsed], device=self._comm_device())
            dist.all_reduce(elapsed_t, op=dist.ReduceOp.MAX)
            elapsed = float(elapsed_t.item())
        acc = acc.cpu()
        n_examples, n_steps = float(acc[4]), float(acc[5])
        skipped, timed_all = (float(v) for v in counts)
        nan = float("nan")
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "train_loss": float(acc[0]) / n_examples if n_examples else nan,
            "kl": float(acc[1]) / n_examples if n_examples else nan,
            "log_px": float(acc[2]) / n_examples if n_examples else nan,
            "grad_norm": float(acc[3]) / n_steps if n_steps else nan,
            "beta": self._beta_schedule(max(self.step - 1, 0)),
            "lr": getattr(self, "_last_lr", self.optimizer.param_groups[0]["lr"]),
            "images_per_s": timed_all / elapsed if elapsed > 0 else nan,
            "epoch_time_s": elapsed,
            "skipped_steps": int(skipped),
        }
        if not finished:
            metrics["partial_epoch"] = True
        self._batches_done = batches_done
        last_epoch = self._done() or epoch + 1 >= cfg.max_epochs
        if self._eval_source is not None and (
            (epoch + 1) % cfg.eval_every_epochs == 0 or last_epoch
        ):
            result = self._evaluate_source(self._eval_source)
            result.update(epoch=epoch + 1, step=self.step)
            self._call("on_eval_end", result)
            metrics.update(
                eval_loss=result["loss"], eval_kl=result["kl"], eval_log_px=result["log_px"]
            )
        if self.history and self.history[-1]["epoch"] == epoch + 1:
            self.history[-1] = metrics  # the rest of an epoch cut short before a resume
        else:
            self.history.append(metrics)
        if finished:
            self.epoch = epoch + 1
        logger.info(
            "epoch %d step %d: train_loss=%.4f%s (%.0f images/s)",
            epoch + 1,
            self.step,
            metrics["train_loss"],
            f" eval_loss={metrics['eval_loss']:.4f}" if "eval_loss" in metrics else "",
            metrics["images_per_s"],
        )
        self._call("on_epoch_end", metrics)
        self._save_best(metrics)
        every = cfg.checkpoint_every_epochs
        due = every is not None and (epoch + 1) % every == 0 and finished
        if due or self._done() or epoch + 1 >= cfg.max_epochs:
            if finished:
                self._epoch_index = epoch + 1
                self.save_checkpoint(batch_in_epoch=0)
            else:
                self.save_checkpoint(batch_in_epoch=batches_done)

    # ---- evaluation ------------------------------------------------------------------------

    def evaluate(self, data: Dataset | DataLoader | None = None) -> dict[str, float]:
        """Evaluates the model on data (default: ``eval_data``) without changing any state.

        The loss is the negative ELBO (beta = 1, no free bits, one sample) averaged over the
        examples, in nats; data are binarized with a fixed seed when ``binarize=True``. Under
        DDP every process evaluates its shard and the results are summed.

        Returns:
            ``loss``, ``kl``, ``log_px``, ``elbo`` (nats per example) and ``num_examples``.
        """
        if data is None:
            data = self.eval_data
        if data is None:
            raise ValueError("evaluate() needs data: pass it, or give the Trainer eval_data")
        before = self.model.validate_inputs
        self.model.to(self.device)
        try:
            source = self._data.source(data, "eval_data" if data is self.eval_data else "data")
            self.model.validate_inputs = False
            return self._evaluate_source(source)
        finally:
            self.model.validate_inputs = before

    @torch.no_grad()
    def _evaluate_source(self, source: DataSource) -> dict[str, float]:
        cfg = self.config
        model = self.model
        was_training = model.training
        model.eval()
        binarize = cfg.binarize or source.dynamic_binarize
        generator = (
            torch.Generator(device=self.device).manual_seed(
                derived_seed(cfg.seed, "eval-binarize", self.rank)
            )
            if binarize
            else None
        )
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        count = 0
        try:
            with isolated_rng(self.device, derived_seed(cfg.seed, "eval", self.rank)):
                for _, x, y in self._data.eval_batches(source):
                    if generator is not None:
                        x = torch.bernoulli(x, generator=generator)
                    kwargs: dict[str, Any] = {"beta": 1.0}
                    if model.num_classes is not None:
                        kwargs["y"] = y
                    with self._autocast():
                        out = model(x, **kwargs)
                    sums += torch.stack(
                        [
                            out.loss.double() * x.shape[0],
                            out.kl.double().sum(),
                            out.log_px.double().sum(),
                        ]
                    )
                    count += x.shape[0]
        finally:
            model.train(was_training)
        totals = torch.cat([sums.cpu(), torch.tensor([float(count)], dtype=torch.float64)])
        if self._dist.enabled:
            t = totals.to(self._comm_device())
            dist.all_reduce(t)
            totals = t.cpu()
        n = float(totals[3])
        if n == 0:
            raise ValueError(f"{source.name} yielded no batches to evaluate")
        loss = float(totals[0]) / n
        return {
            "loss": loss,
            "kl": float(totals[1]) / n,
            "log_px": float(totals[2]) / n,
            "elbo": -loss,
            "num_examples": int(n),
        }
