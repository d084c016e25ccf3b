"""Static and dynamic Bernoulli binarization."""

import pytest
import torch

from vaekit.data import TensorImageDataset, dynamic_binarize, load_dataset, static_binarize

SMALL = {"image_size": 32, "num_scales": 2, "num_rotations": 4, "num_positions": 5}


def test_static_binarization_is_deterministic_for_the_seed():
    a = load_dataset("shapes", split="test", binarize="static", binarize_seed=7, **SMALL)
    b = load_dataset("shapes", split="test", binarize="static", binarize_seed=7, **SMALL)
    c = load_dataset("shapes", split="test", binarize="static", binarize_seed=8, **SMALL)
    grey = load_dataset("shapes", split="test", **SMALL)
    assert a.binarize == "static" and grey.binarize is None
    assert set(a.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.equal(a.labels, grey.labels) and torch.equal(a.factors, grey.factors)
    # Bernoulli draws: black stays black, white stays white, only grey edges vary.
    assert torch.equal(a.x[grey.x == 0], torch.zeros_like(a.x[grey.x == 0]))
    assert torch.equal(a.x[grey.x == 1], torch.ones_like(a.x[grey.x == 1]))
    edges = (grey.x > 0) & (grey.x < 1)
    assert not torch.equal(a.x[edges], c.x[edges])


def test_static_binarize_keeps_grey_level_on_average():
    x = torch.linspace(0, 1, 11).repeat(20000, 1)
    binary = static_binarize(x, seed=3)
    assert torch.equal(binary, static_binarize(x, seed=3))
    assert torch.allclose(binary.mean(0), x[0], atol=0.015)  # 4 standard errors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dynamic_binarize_mean_is_the_grey_level(dtype):
    x = torch.linspace(0, 1, 11, dtype=dtype).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    b = dynamic_binarize(x, generator=g)
    assert b.dtype == dtype and b.device == x.device
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(b.mean(0), x[0], atol=0.015)
    assert b[:, 0].max() == 0 and b[:, -1].min() == 1
    # Fresh draws each call, reproducible with a seeded generator.
    assert not torch.equal(b, dynamic_binarize(x, generator=g))
    assert torch.equal(b, dynamic_binarize(x, generator=torch.Generator().manual_seed(0)))


def test_dynamic_binarize_stays_on_the_test_device(device):
    x = torch.full((1000, 100), 0.25, device=device)
    b = dynamic_binarize(x, generator=torch.Generator(device=device).manual_seed(1))
    assert b.device == x.device and abs(b.mean().item() - 0.25) < 0.01
    assert torch.equal(static_binarize(x, seed=2), static_binarize(x, seed=2))


def test_dynamic_binarize_rejects_integers():
    with pytest.raises(TypeError, match="floating-point"):
        dynamic_binarize(torch.zeros(3, dtype=torch.uint8))


def test_dynamic_dataset_draws_per_access_and_keeps_grey_levels():
    ds = load_dataset("shapes", split="test", binarize="dynamic", **SMALL)
    grey = load_dataset("shapes", split="test", **SMALL)
    assert ds.binarize == "dynamic" and torch.equal(ds.x, grey.x)
    i = int(((grey.x > 0) & (grey.x < 1)).flatten(1).sum(1).argmax())
    draws = torch.stack([ds[i][0] for _ in range(2000)])
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(draws.mean(0), grey.x[i], atol=0.05)


def test_binarize_option_errors():
    with pytest.raises(ValueError, match="binarize"):
        load_dataset("shapes", split="test", binarize="threshold", **SMALL)
    with pytest.raises(ValueError, match="0s and 1s"):
        TensorImageDataset(torch.full((2, 1, 2, 2), 0.5), binarize="static")
