"""Random number generators of a run: derived seeds, device states, isolated blocks."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["derived_seed", "get_device_rng", "isolated_rng", "set_device_rng"]


def derived_seed(seed: int, *salt: object) -> int:
    """A 63-bit seed derived from the run's seed and a purpose, stable across machines."""
    digest = hashlib.sha256(repr((seed, *salt)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _device_module(device: torch.device) -> Any:
    return getattr(torch, device.type)


def get_device_rng(device: torch.device) -> Tensor:
    module = _device_module(device)
    try:
        return module.get_rng_state(device.index)
    except TypeError:
        return module.get_rng_state()


def set_device_rng(device: torch.device, state: Tensor) -> None:
    module = _device_module(device)
    try:
        module.set_rng_state(state, device.index)
    except TypeError:
        module.set_rng_state(state)


@contextlib.contextmanager
def isolated_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Runs a block with the global RNGs seeded to ``seed``, restoring them afterwards."""
    cpu_state = torch.get_rng_state()
    dev_state = get_device_rng(device) if device.type != "cpu" else None
    try:
        torch.default_generator.manual_seed(seed)
        if device.type != "cpu":
            _device_module(device).manual_seed(seed)
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if dev_state is not None:
            set_device_rng(device, dev_state)
