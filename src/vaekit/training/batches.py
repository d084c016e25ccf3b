"""How the trainer reads data: in-memory tensors on the device, or a DataLoader.

An in-memory dataset (a ``TensorDataset``, or anything with ``.x`` and ``.labels`` tensors
such as :class:`vaekit.data.TensorImageDataset`) is validated once, moved to the device once
and batched by index with a seeded permutation per epoch: no per-example Python. Other
map-style datasets are read through a ``DataLoader`` built here (workers, pinned memory on
CUDA, the same seeded order); a user's own ``DataLoader`` is used as it is. Every path can
resume mid-epoch exactly where a checkpoint left off.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset, default_collate

from vaekit.models.base import VAE
from vaekit.training.config import TrainConfig
from vaekit.training.distributed import shard_indices
from vaekit.training.rng import derived_seed

__all__ = ["DataFeeder", "DataSource", "check_data_object", "split_batch"]

logger = logging.getLogger(__name__)

_VALIDATION_CHUNK = 8192  # examples checked at once when validating an in-memory dataset
_PREVIEW_MAX = 64


class _IndexSampler(Sampler[int]):
    """Yields a precomputed list of indices (the epoch's shard, from where to resume)."""

    def __init__(self, indices: Sequence[int]):
        self.indices = indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class DataSource:
    """A dataset prepared for training or evaluation.

    ``kind`` is "memory" (``x``/``labels`` tensors on the device), "dataset" (a map-style
    dataset read through a DataLoader built here) or "loader" (the user's DataLoader).
    """

    name: str
    kind: str
    num_examples: int | None
    x: Tensor | None = None
    labels: Tensor | None = None
    dataset: Any = None
    loader: DataLoader | None = None
    dynamic_binarize: bool = False


def split_batch(batch: Any, name: str, index: int) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], labels
    raise TypeError(
        f"{name} batch {index}: expected a tensor or an (x, label) pair of tensors, got "
        f"{type(batch).__name__}; make the dataset return x or (x, label)"
    )


def check_data_object(data: Any, name: str) -> None:
    """Raises early for data the trainer cannot use (empty, a bare tensor, not a dataset)."""
    if isinstance(data, DataLoader):
        try:
            n = len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            return  # an iterable dataset: its emptiness shows when it is iterated
        if n == 0:
            raise ValueError(f"{name} is empty: its DataLoader's dataset has no examples")
        return
    if isinstance(data, Tensor):
        raise TypeError(
            f"{name} is a bare tensor; wrap it as torch.utils.data.TensorDataset(x) "
            "(or TensorDataset(x, labels))"
        )
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(
            f"{name} must be a map-style Dataset (with __getitem__ and __len__) or a "
            f"DataLoader, got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"{name} is empty: it has no examples to train or evaluate on")


class DataFeeder:
    """Prepares the trainer's data sources and yields their batches on the device.

    Args:
        model: the model whose ``check_input`` defines valid data.
        device: where batches go.
        config: the run's settings (batch sizes, data path, workers, seed, ...).

    Attributes:
        rank / world_size: this process's shard of every epoch (set by the trainer).
        loader_epoch_rng: RNG states at the start of the epoch of a user's DataLoader, kept in
            checkpoints so that a mid-epoch resume replays the same order.
    """

    def __init__(self, model: VAE, device: torch.device, config: TrainConfig):
        self.model = model
        self.device = device
        self.config = config
        self.rank = 0
        self.world_size = 1
        self.sources: dict[int, DataSource] = {}
        self.loader_epoch_rng: dict[str, Any] | None = None

    def tensors_of(self, data: Any) -> tuple[Tensor, Tensor | None] | None:
        """(x, labels) of an in-memory tensor dataset, or None for other datasets."""
        if isinstance(data, TensorDataset):
            tensors = data.tensors
            x = tensors[0]
            labels = tensors[1] if len(tensors) > 1 else None
        elif isinstance(getattr(data, "x", None), Tensor):
            x = data.x
            labels = getattr(data, "labels", None)
        else:
            return None
        if labels is not None and not (
            isinstance(labels, Tensor) and labels.dim() == 1 and labels.shape[0] == x.shape[0]
        ):
            labels = None
        return x, labels

    def source(self, data: Any, name: str) -> DataSource:
        key = id(data)
        if key not in self.sources:
            self.sources[key] = self._make_source(data, name)
        return self.sources[key]

    def _make_source(self, data: Any, name: str) -> DataSource:
        mode = self.config.data_path
        check_data_object(data, name)
        if isinstance(data, DataLoader):
            if mode == "memory":
                tensors = self.tensors_of(data.dataset)
                if tensors is None:
                    raise ValueError(
                        f"data_path='memory' needs an in-memory tensor dataset, but {name}'s "
                        f"DataLoader reads a {type(data.dataset).__name__}"
                    )
                return self._memory_source(data.dataset, *tensors, name)
            source = DataSource(name, "loader", None, loader=data)
            with contextlib.suppress(TypeError):
                source.num_examples = len(data.dataset)  # type: ignore[arg-type]
            self._validate_first_batch(source)
            return source
        tensors = self.tensors_of(data) if mode != "loader" else None
        if mode == "memory" and tensors is None:
            raise ValueError(
                f"data_path='memory' needs an in-memory tensor dataset (TensorDataset or one "
                f"with .x and .labels tensors), but {name} is a {type(data).__name__}"
            )
        if tensors is not None:
            source = self._memory_source(data, *tensors, name)
            if source is not None:
                return source
        source = DataSource(name, "dataset", len(data), dataset=data)
        self._validate_first_batch(source)
        return source

    def _memory_source(self, data: Any, x: Tensor, labels: Tensor | None, name: str) -> DataSource:
        model = self.model
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty: it has no examples to train or evaluate on")
        if self.device.type == "cuda" and x.device != self.device:
            free, _ = torch.cuda.mem_get_info(self.device)
            if x.numel() * x.element_size() > 0.5 * free and self.config.data_path == "auto":
                logger.info(
                    "%s (%.1f GB) does not fit comfortably in device memory; using a DataLoader",
                    name,
                    x.numel() * x.element_size() / 1e9,
                )
                source = DataSource(name, "dataset", len(data), dataset=data)
                self._validate_first_batch(source)
                return source
        x = x.to(self.device)
        needs_labels = model.num_classes is not None
        if needs_labels and labels is None:
            raise ValueError(
                f"the model is conditional (num_classes={model.num_classes}) but {name} has no "
                "labels; give (x, labels) data, e.g. TensorDataset(x, labels)"
            )
        labels = labels.to(self.device) if (labels is not None and needs_labels) else None
        self._check_dtype(x, name, "")
        if not self._looks_valid(x, labels):
            self._check_in_chunks(x, labels, name)  # raises the model's own message
        dynamic = getattr(data, "binarize", None) == "dynamic"
        return DataSource(name, "memory", x.shape[0], x=x, labels=labels, dynamic_binarize=dynamic)

    @torch.no_grad()
    def _looks_valid(self, x: Tensor, y: Tensor | None) -> bool:
        """Whether ``model.check_input(x, y)`` would pass, in a few cheap passes over x.

        ``check_input`` tests finiteness with ``isfinite(x).all()``, about 20 times slower on
        the CPU than one ``aminmax`` pass, which also sees NaN (it propagates) and Inf. So
        the model's own check runs on the first examples (shape, dtype, label types), the
        values are checked in bulk, and any doubt hands over to the full ``check_input``.
        Models that override ``check_input`` always get the full check.
        """
        model = self.model
        if type(model).check_input is not VAE.check_input or not x.is_floating_point():
            return False
        n = x.shape[0]
        if n == 0 or (y is not None and tuple(y.shape) != (n,)):
            return False
        try:
            model.check_input(x[:2], None if y is None else y[:2])
            lo, hi = torch.aminmax(x)
            if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
                return False
            model.likelihood.validate_target(x)
            if y is not None and model.num_classes is not None:
                y_lo, y_hi = torch.aminmax(y)
                if int(y_lo) < 0 or int(y_hi) >= model.num_classes:
                    return False
        except (ValueError, TypeError):
            return False
        return True

    @torch.no_grad()
    def _check_in_chunks(self, x: Tensor, y: Tensor | None, name: str) -> None:
        """Runs ``model.check_input`` chunk by chunk, naming the dataset and the examples."""
        n = x.shape[0]
        for start in range(0, max(n, 1), _VALIDATION_CHUNK):
            chunk = x[start : start + _VALIDATION_CHUNK]
            labels = None if y is None else y[start : start + _VALIDATION_CHUNK]
            try:
                self.model.check_input(chunk, labels)
            except (ValueError, TypeError) as err:
                where = f" (examples {start}..{start + chunk.shape[0] - 1})"
                message = str(err)
                if not message.startswith(name):
                    message = f"{name}{where if n > _VALIDATION_CHUNK else ''}: {message}"
                raise type(err)(message) from None

    def _check_dtype(self, x: Tensor, name: str, where: str) -> None:
        param = next(self.model.parameters(), None)
        if (
            param is not None
            and x.is_floating_point()
            and x.dtype != param.dtype
            and x.dtype not in (torch.float16, torch.bfloat16)
        ):
            raise TypeError(
                f"{name}{where}: x has dtype {x.dtype} but the model's parameters are "
                f"{param.dtype}; convert the data (e.g. x.float()) or the model"
            )

    def check_batch(self, x: Tensor, y: Tensor | None, name: str, index: int) -> None:
        try:
            if not isinstance(x, Tensor):
                raise TypeError(f"expected x to be a torch.Tensor, got {type(x).__name__}")
            self._check_dtype(x, name, f" batch {index}")
            if self.model.num_classes is not None and y is None:
                raise ValueError(
                    f"the model is conditional (num_classes={self.model.num_classes}) but the "
                    "data yield no labels; yield (x, label) pairs"
                )
            labels = y if self.model.num_classes is not None else None
            if not self._looks_valid(x, labels):
                self.model.check_input(x, labels)
        except (ValueError, TypeError) as err:
            message = str(err)
            if not message.startswith(name):
                message = f"{name} batch {index}: {message}"
            raise type(err)(message) from None

    def first_items(self, source: DataSource, n: int) -> tuple[Tensor, Tensor | None] | None:
        """The first ``n`` examples of a source, without touching the training RNG streams."""
        if source.kind == "memory":
            if source.x is None:  # internal invariant of _Source
                raise RuntimeError("x missing from the data source")
            labels = None if source.labels is None else source.labels[:n]
            return source.x[:n], labels
        dataset = source.dataset if source.kind == "dataset" else source.loader.dataset  # type: ignore[union-attr]
        collate = source.loader.collate_fn if source.loader is not None else default_collate
        with torch.random.fork_rng(devices=[]):
            try:
                count = min(n, len(dataset))  # type: ignore[arg-type]
                items = [dataset[i] for i in range(count)]
            except (TypeError, NotImplementedError):
                return None  # an iterable-style dataset: checked batch by batch instead
            if not items:
                return None
            batch = collate(items)
        x, labels = split_batch(batch, source.name, 0)
        x = x.to(self.device)
        labels = labels.to(self.device) if labels is not None else None
        return x, labels

    def _validate_first_batch(self, source: DataSource) -> None:
        first = self.first_items(source, min(self.config.batch_size, _PREVIEW_MAX))
        if first is not None:
            self.check_batch(*first, source.name, 0)

    def batches_per_epoch(self, source: DataSource) -> int:
        cfg = self.config
        if source.kind == "loader":
            if source.loader is None:  # internal invariant of _Source
                raise RuntimeError("loader missing from the data source")
            try:
                return len(source.loader)
            except TypeError:
                if cfg.max_steps is None:
                    raise ValueError(
                        f"{source.name} is a DataLoader without a length (an iterable dataset); "
                        "set max_steps so the trainer knows when to stop"
                    ) from None
                return cfg.max_steps
        if source.num_examples is None:  # internal invariant of _Source
            raise RuntimeError("num_examples missing from the data source")
        per_rank = -(-source.num_examples // self.world_size)
        if cfg.drop_last:
            return per_rank // cfg.batch_size
        return -(-per_rank // cfg.batch_size)

    def _epoch_order(self, n: int, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(derived_seed(self.config.seed, "order", epoch))
        order = torch.randperm(n, generator=generator)
        return shard_indices(order, self.rank, self.world_size, pad=True)

    def train_batches(
        self, source: DataSource, epoch: int, start: int
    ) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        cfg = self.config
        bs = cfg.batch_size
        num_batches = self.batches_per_epoch(source)
        if source.kind == "memory":
            if source.x is None or source.num_examples is None:  # _Source invariant
                raise RuntimeError("an in-memory data source lacks its tensors")
            order = self._epoch_order(source.num_examples, epoch).to(self.device)
            for b in range(start, num_batches):
                idx = order[b * bs : (b + 1) * bs]
                x = source.x.index_select(0, idx)
                y = None if source.labels is None else source.labels.index_select(0, idx)
                yield b, x, y
            return
        if source.kind == "dataset":
            if source.num_examples is None:  # internal invariant of _Source
                raise RuntimeError("num_examples missing from the data source")
            order = self._epoch_order(source.num_examples, epoch)[start * bs :]
            loader = DataLoader(
                source.dataset,
                batch_size=bs,
                sampler=_IndexSampler(order.tolist()),
                num_workers=cfg.num_workers,
                pin_memory=self.device.type == "cuda",
                drop_last=cfg.drop_last,
                generator=torch.Generator().manual_seed(
                    derived_seed(cfg.seed, "workers", epoch, self.rank)
                ),
            )
            batches: Iterable[Any] = loader
        else:
            batches = self._user_loader_batches(source, epoch, start)
        for b, batch in zip(itertools.count(start), batches):
            x, y = split_batch(batch, source.name, b)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True) if y is not None else None
            self.check_batch(x, y, source.name, b)
            yield b, x, y

    def _user_loader_batches(self, source: DataSource, epoch: int, start: int) -> Iterator[Any]:
        """Iterates the user's DataLoader; on a mid-epoch resume, replays the epoch's start
        (its RNG state was saved) and skips the batches already trained on."""
        loader = source.loader
        if loader is None:  # _Source invariant
            raise RuntimeError("a DataLoader source lacks its loader")
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # type: ignore[union-attr]
        saved = self.loader_epoch_rng if start > 0 else None
        if saved is not None:
            now_cpu = torch.get_rng_state()
            now_gen = loader.generator.get_state() if loader.generator is not None else None
            torch.set_rng_state(saved["torch_cpu"])
            if loader.generator is not None and saved.get("generator") is not None:
                loader.generator.set_state(saved["generator"])
        else:
            self.loader_epoch_rng = {
                "torch_cpu": torch.get_rng_state(),
                "generator": loader.generator.get_state() if loader.generator is not None else None,
            }
        iterator = iter(loader)
        if start > 0:
            for _ in itertools.islice(iterator, start):
                pass
            if saved is not None:
                torch.set_rng_state(now_cpu)
                if now_gen is not None:
                    loader.generator.set_state(now_gen)
            else:
                logger.warning(
                    "resuming %s mid-epoch without its saved data order; the rest of epoch %d "
                    "may repeat or miss examples",
                    source.name,
                    epoch + 1,
                )
        yield from iterator

    def eval_batches(self, source: DataSource) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        bs = self.config.eval_batch_size or self.config.batch_size
        if source.kind == "memory":
            if source.x is None or source.num_examples is None:  # _Source invariant
                raise RuntimeError("an in-memory data source lacks its tensors")
            idx = shard_indices(
                torch.arange(source.num_examples, device=self.device),
                self.rank,
                self.world_size,
                pad=False,
            )
            for b, start in enumerate(range(0, idx.shape[0], bs)):
                sel = idx[start : start + bs]
                x = source.x.index_select(0, sel)
                y = None if source.labels is None else source.labels.index_select(0, sel)
                yield b, x, y
            return
        if source.kind == "dataset":
            if source.num_examples is None:  # internal invariant of _Source
                raise RuntimeError("num_examples missing from the data source")
            order = shard_indices(
                torch.arange(source.num_examples), self.rank, self.world_size, pad=False
            )
            batches: Iterable[Any] = DataLoader(
                source.dataset,
                batch_size=bs,
                sampler=_IndexSampler(order.tolist()),
                num_workers=self.config.num_workers,
                pin_memory=self.device.type == "cuda",
            )
        else:
            batches = source.loader  # type: ignore[assignment]
        for b, batch in enumerate(batches):
            x, y = split_batch(batch, source.name, b)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True) if y is not None else None
            self.check_batch(x, y, source.name, b)
            yield b, x, y
