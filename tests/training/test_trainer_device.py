"""resolve_device: one place that turns "auto"/"cpu"/"cuda:1" into a usable device."""

from __future__ import annotations

import pytest
import torch

from vaekit.training import available_devices, resolve_device


def test_cpu_and_torch_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_picks_the_runtime_accelerator_or_cpu() -> None:
    device = resolve_device("auto")
    acc = torch.accelerator.current_accelerator(check_available=True)
    if acc is None:
        assert device == torch.device("cpu")
    else:
        assert device.type == acc.type and device.index is not None
        assert torch.zeros(1, device=device).device == device
    assert resolve_device(None) == device


def test_unknown_device_string_lists_the_options() -> None:
    with pytest.raises(ValueError, match=r"unknown device 'gpu'.*available here: cpu"):
        resolve_device("gpu")


def test_unavailable_device_is_a_clear_error() -> None:
    if torch.accelerator.current_accelerator(check_available=True) is None:
        with pytest.raises(ValueError, match="'cuda:0' was requested but cuda is not available"):
            resolve_device("cuda:0")
    else:
        acc = torch.accelerator.current_accelerator(check_available=True)
        with pytest.raises(ValueError, match="device\\(s\\)"):
            resolve_device(f"{acc.type}:99")


def test_available_devices_starts_with_cpu() -> None:
    assert available_devices()[0] == "cpu"


def test_wrong_type() -> None:
    with pytest.raises(TypeError, match=r"string or torch\.device"):
        resolve_device(3)  # type: ignore[arg-type]
