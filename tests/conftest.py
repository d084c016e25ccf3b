"""Shared fixtures. The device comes from VAEKIT_TEST_DEVICE (default "cpu"), so the same
suite runs on a GPU machine: ``VAEKIT_TEST_DEVICE=cuda bash scripts/test.sh``.

Hub fixtures: tests never reach the real Hugging Face Hub. ``huggingface_hub`` is offline for
every test, except inside the ``hub`` fixture, which points it at the local emulator in
``tests/hub_server.py`` (and only lets it talk to 127.0.0.1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# Tests never reach the real Hugging Face Hub; hub tests point the client at tests/hub_server.
# Forced, not setdefault: an HF_HUB_OFFLINE=0 in the caller's environment must not put tests
# online. Set before anything imports huggingface_hub, which reads it at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from huggingface_hub import constants as hf_constants

hf_constants.HF_HUB_OFFLINE = True  # in case huggingface_hub was imported before this file

from hub_server import HubServer  # noqa: E402

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


# --------------------------------------------------------------------------------------------
# Hub fixtures
# --------------------------------------------------------------------------------------------


class _FastTime:
    """``time`` with short sleeps, for huggingface_hub's retry back-off in failing tests."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


def _loopback_only(request: Any) -> None:
    if request.url.host != "127.0.0.1":
        raise RuntimeError(
            f"a test tried to reach {request.url}: tests may only talk to the Hub emulator "
            "(the `hub` fixture); everything else is offline"
        )


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A running :class:`HubServer`, with ``huggingface_hub`` pointed at it.

    ``huggingface_hub`` is online for this test only, uses ``tmp_path / "hf-cache"`` as its
    cache, sends no implicit token, retries without long sleeps, and refuses any host other
    than 127.0.0.1. Go offline mid-test with the ``hub_offline`` fixture.
    """
    import huggingface_hub
    from huggingface_hub import file_download, hf_api
    from huggingface_hub.utils import _http

    with HubServer() as server:
        patches: dict[str, Any] = {
            "ENDPOINT": server.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
            "HF_TOKEN_PATH": str(tmp_path / "hf-token"),
            "HF_HUB_ETAG_TIMEOUT": 5,  # must differ from the default (10) to take effect
            "HF_HUB_DOWNLOAD_TIMEOUT": 5,
        }
        for name, value in patches.items():
            monkeypatch.setattr(hf_constants, name, value)
        monkeypatch.setattr(hf_api.api, "endpoint", server.url)
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(file_download, "time", _FastTime())
        monkeypatch.setattr(_http, "time", _FastTime())

        def guarded_client() -> Any:
            client = _http.default_client_factory()
            hooks = client.event_hooks
            hooks["request"] = [*hooks.get("request", []), _loopback_only]
            client.event_hooks = hooks
            return client

        huggingface_hub.set_client_factory(guarded_client)
        try:
            yield server
        finally:
            huggingface_hub.set_client_factory(_http.default_client_factory)


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """``hub_offline(True)`` switches huggingface_hub to offline mode (``HF_HUB_OFFLINE=1``)."""

    def set_offline(offline: bool = True) -> None:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", offline)

    return set_offline
