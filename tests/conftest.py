"""Shared fixtures. The device comes from VAEKIT_TEST_DEVICE (default "cpu"), so the same
suite runs on a GPU machine: ``VAEKIT_TEST_DEVICE=cuda bash scripts/test.sh``."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never reach the real Hugging Face Hub; hub tests point the client at tests/hub_server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TEST_DEVICE = torch.device(os.environ.get("VAEKIT_TEST_DEVICE", "cpu"))


@pytest.fixture
def device() -> torch.device:
    """The device under test (``VAEKIT_TEST_DEVICE``, default CPU)."""
    return TEST_DEVICE


def low_precision_dtypes() -> list[torch.dtype]:
    """Autocast dtypes worth testing on the device under test."""
    return [torch.bfloat16, torch.float16] if TEST_DEVICE.type == "cuda" else [torch.bfloat16]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
