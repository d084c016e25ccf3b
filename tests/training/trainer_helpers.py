"""Shared helpers of the trainer tests (imported by the test modules): tiny models and
data, and the test device.

``VAEKIT_TEST_DEVICE`` (default ``cpu``) picks the device, so the same tests run on a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import TensorDataset

import vaekit
from vaekit.training import Callback, TrainConfig, Trainer

DEVICE = os.environ.get("VAEKIT_TEST_DEVICE", "cpu")
ON_CPU = torch.device(DEVICE).type == "cpu"
PRECISIONS = ["fp32", "bf16"] + (["fp16"] if DEVICE.startswith("cuda") else [])
SHAPE = (1, 8, 8)


def make_model(seed: int = 0, **kwargs: Any) -> vaekit.MLPVAE:
    """A small MLPVAE on (1, 8, 8) images with reproducible initial weights."""
    torch.manual_seed(seed)
    kwargs.setdefault("hidden_dims", (32,))
    kwargs.setdefault("latent_dim", 4)
    return vaekit.MLPVAE(input_shape=SHAPE, **kwargs)


def make_images(
    n: int = 256, seed: int = 0, num_classes: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey-level images drawn around ``num_classes`` random binary prototypes, and labels."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(num_classes, *SHAPE, generator=g) > 0.5).float()
    labels = torch.randint(0, num_classes, (n,), generator=g)
    noise = 0.1 * torch.rand(n, *SHAPE, generator=g)
    x = (prototypes[labels] * 0.85 + 0.05 + noise).clamp(0, 1)
    return x, labels


def make_dataset(n: int = 256, seed: int = 0, labels: bool = False) -> TensorDataset:
    x, y = make_images(n, seed)
    return TensorDataset(x, y) if labels else TensorDataset(x)


def make_config(**kwargs: Any) -> TrainConfig:
    defaults: dict[str, Any] = {
        "device": DEVICE,
        "batch_size": 32,
        "max_epochs": 2,
        "progress": False,
        "save_images": False,
        "log_every_steps": 4,
    }
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        if ON_CPU:
            assert torch.equal(sa[name], sb[name]), f"{name} differs"
        else:  # GPU kernels need not be deterministic
            torch.testing.assert_close(sa[name], sb[name], rtol=1e-4, atol=1e-5, msg=name)


class PlainDataset(torch.utils.data.Dataset):
    """A map-style dataset that is not a TensorDataset: it takes the DataLoader path."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        self._x = x
        self._labels = labels

    def __len__(self) -> int:
        return self._x.shape[0]

    def __getitem__(self, i: int) -> Any:
        if self._labels is None:
            return self._x[i]
        return self._x[i], self._labels[i]


class Recorder(Callback):
    """Records every hook call and step metrics."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append("fit_start")

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append("step")
        self.steps.append(dict(metrics))

    def on_log(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append("log")

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append("eval")

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append("epoch")

    def on_fit_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.calls.append("fit_end")
