"""Every shipped reference model loads strictly and its card's metrics still hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

import vaekit
from vaekit.data import load_dataset

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
MODELS = sorted(p for p in PRETRAINED.iterdir() if (p / "config.json").is_file())
# Same machine: equal to the printed digits; other BLAS builds differ by far less than this.
TOLERANCE_NATS = 0.05


def test_reference_models_are_shipped() -> None:
    assert MODELS, f"expected reference models in {PRETRAINED}"


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_card_metrics_hold(path: Path) -> None:
    assert (path / "model.safetensors").stat().st_size < 5_000_000  # "under 5 MB"
    model = vaekit.AutoVAE.from_pretrained(path, dtype=torch.float32)
    card = ModelCard.load(path / "README.md").data.to_dict()
    metrics = card["vaekit"]["metrics"]
    dataset = card["datasets"][0]
    dataset_kwargs = json.loads(card["vaekit"]["training"].get("dataset_kwargs", "{}"))
    binarized = card["vaekit"]["training"]["binarized_test"]
    kwargs = dict(dataset_kwargs)
    if binarized:
        kwargs.update(binarize="static", binarize_seed=0)
    test = load_dataset(dataset, split="test", **kwargs)
    test = torch.utils.data.Subset(test, range(metrics["subset_images"]))
    result = vaekit.evaluate(
        model, test, num_samples=metrics["subset_samples"], seed=0, batch_size=100
    )
    assert abs(result["nll"] - metrics["nll_subset"]) < TOLERANCE_NATS
    assert abs(result["elbo"] - metrics["elbo_subset"]) < TOLERANCE_NATS
