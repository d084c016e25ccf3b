"""Saved models, checkpoints and run directories get the modes the user's umask asks for.

safetensors, ``mkstemp`` and ``mkdtemp`` create owner-only files (0600/0700); without care a
model saved into a shared directory is unreadable to the rest of the group.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit.training import TrainConfig, Trainer

UMASK = 0o027  # group may read, others nothing: differs from both 0600 and 0644


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in [root, *root.rglob("*")]
        if not p.name.endswith(".lock")
    }


def _expected(path: Path, umask: int) -> int:
    return (0o777 if path.is_dir() else 0o666) & ~umask


def test_save_pretrained_follows_umask(tmp_path: Path, umask: int) -> None:
    model = vaekit.MLPVAE(input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,))
    model.save_pretrained(tmp_path / "m")
    for name, mode in _modes(tmp_path / "m").items():
        assert mode == _expected(tmp_path / "m" / name, umask), (name, oct(mode))
    assert stat.S_IMODE((tmp_path / "m" / "model.safetensors").stat().st_mode) == 0o640


def test_training_run_follows_umask(tmp_path: Path, umask: int) -> None:
    x = torch.bernoulli(torch.rand(32, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    model = vaekit.MLPVAE(input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,))
    config = TrainConfig(
        max_epochs=2,
        batch_size=16,
        device="cpu",
        output_dir=str(tmp_path / "run"),
        progress=False,
        save_images=False,
    )
    data = torch.utils.data.TensorDataset(x)
    Trainer(model, data, eval_data=data, config=config).fit()
    modes = _modes(tmp_path / "run")
    assert any(name.endswith("model.safetensors") for name in modes)
    assert any("checkpoints" in name and name.endswith(".safetensors") for name in modes)
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != _expected(tmp_path / "run" / name, umask)
    }
    assert not wrong, wrong
