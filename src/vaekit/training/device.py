"""Device resolution: the one place where vaekit turns a device string into a torch.device.

>>> from vaekit.training import resolve_device
>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device"]


def _current_accelerator() -> torch.device | None:
    """The accelerator that is usable at runtime (CUDA, MPS, XPU, ...), or None."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None:  # torch < 2.6 has no torch.accelerator
        return torch.device("cuda") if torch.cuda.is_available() else None
    return accelerator.current_accelerator(check_available=True)


def _device_count(device_type: str) -> int:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return int(accelerator.device_count())
    return torch.cuda.device_count() if device_type == "cuda" else 0


def available_devices() -> list[str]:
    """Names of the devices this process can use, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    acc = _current_accelerator()
    if acc is not None:
        names += [f"{acc.type}:{i}" for i in range(_device_count(acc.type))]
    return names


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turns a device specification into a usable ``torch.device``.

    Args:
        spec: ``"auto"`` (or ``None``) picks the runtime accelerator reported by
            ``torch.accelerator`` (CUDA, MPS, XPU, ...) and falls back to the CPU; an explicit
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ... or a ``torch.device`` is checked
            for availability.

    Returns:
        The device. Accelerators always carry an index (``cuda`` becomes ``cuda:0``, the
        current device), so that ``tensor.device == resolve_device(...)`` holds.

    Raises:
        ValueError: when the string is not a device name, or the device is not available
            here (the message lists the devices that are).
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        acc = _current_accelerator()
        if acc is None:
            return torch.device("cpu")
        return torch.device(acc.type, _current_index(acc.type))
    if isinstance(spec, str):
        try:
            device = torch.device(spec.strip())
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {spec!r}; use 'auto', 'cpu' or an accelerator such as "
                f"'cuda', 'cuda:1', 'mps' or 'xpu' (available here: "
                f"{', '.join(available_devices())})"
            ) from err
    elif isinstance(spec, torch.device):
        device = spec
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(spec).__name__}")
    if device.type == "cpu":
        return torch.device("cpu")
    acc = _current_accelerator()
    if acc is None or acc.type != device.type:
        raise ValueError(
            f"device {str(device)!r} was requested but {device.type} is not available on this "
            f"machine (available: {', '.join(available_devices())}); use device='auto' to pick "
            "the best available one, or device='cpu'"
        )
    count = _device_count(device.type)
    index = _current_index(device.type) if device.index is None else device.index
    if not 0 <= index < count:
        raise ValueError(
            f"device {str(device)!r} was requested but this machine has {count} {device.type} "
            f"device(s) (available: {', '.join(available_devices())})"
        )
    return torch.device(device.type, index)


def _current_index(device_type: str) -> int:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return int(accelerator.current_device_index())
    return torch.cuda.current_device() if device_type == "cuda" else 0
