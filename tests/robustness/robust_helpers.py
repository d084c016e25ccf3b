"""Shared helpers of the robustness tests: tiny models and data, and a child-process runner.

Every test here states the threat it checks in its docstring. They run on the CPU (the
bit-exact claims are CPU claims) and keep models tiny, so the whole directory stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

import vaekit
from vaekit.training import TrainConfig

SRC = str(Path(__file__).resolve().parents[2] / "src")
SHAPE = (1, 4, 4)


def tiny_model(seed: int = 0, **kwargs: Any) -> vaekit.MLPVAE:
    """An MLPVAE on (1, 4, 4) images with reproducible initial weights."""
    torch.manual_seed(seed)
    kwargs.setdefault("hidden_dims", (8,))
    kwargs.setdefault("latent_dim", 2)
    return vaekit.MLPVAE(input_shape=SHAPE, **kwargs)


def tiny_data(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, *SHAPE, generator=g))


def tiny_config(**kwargs: Any) -> TrainConfig:
    defaults: dict[str, Any] = {
        "device": "cpu",
        "batch_size": 16,
        "max_epochs": 1,
        "progress": False,
        "save_images": False,
    }
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def child_env() -> dict[str, str]:
    """The environment of a child Python: this checkout's src, one thread, offline."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def python(code: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Starts ``python -c code`` with :func:`child_env`."""
    return subprocess.Popen([sys.executable, "-c", code], env=child_env(), **kwargs)


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
