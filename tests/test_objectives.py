"""Beta schedules, free bits and the IWAE bound."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.objectives import (
    ConstantBeta,
    CyclicalBeta,
    LinearWarmup,
    free_bits_kl,
    iwae_bound,
    make_beta_schedule,
)


def test_linear_warmup() -> None:
    s = LinearWarmup(warmup_steps=10, beta_max=2.0)
    assert [s(i) for i in (0, 5, 10, 100)] == [0.0, 1.0, 2.0, 2.0]
    assert LinearWarmup(0)(0) == 1.0


def test_cyclical() -> None:
    s = CyclicalBeta(cycle_steps=10, ratio=0.5, num_cycles=2)
    assert [s(i) for i in (0, 2, 5, 9, 10, 12, 20, 35)] == [0.0, 0.4, 1.0, 1.0, 0.0, 0.4, 1.0, 1.0]


def test_make_beta_schedule() -> None:
    assert make_beta_schedule("constant", beta=0.5)(123) == 0.5
    assert isinstance(make_beta_schedule("linear", warmup_steps=3), LinearWarmup)
    with pytest.raises(ValueError, match="constant, linear, cyclical"):
        make_beta_schedule("cosine")
    with pytest.raises(TypeError, match="cyclical"):
        make_beta_schedule("cyclical", period=3)
    assert ConstantBeta()(0) == 1.0


def test_free_bits() -> None:
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]], requires_grad=True)  # (B=2, D=2)
    out = free_bits_kl(kl, free_bits=0.5)
    # Dim 0 has batch-mean 0.2 < 0.5: charged 0.5 per example, no gradient. Dim 1 is kept.
    torch.testing.assert_close(out, torch.tensor([2.5, 4.5]))
    out.sum().backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(free_bits_kl(kl, 0.0), kl.sum(-1))
    with pytest.raises(ValueError, match=">= 0"):
        free_bits_kl(kl, -1.0)


def test_iwae_bound_is_log_mean_exp() -> None:
    log_w = torch.randn(50, 3, dtype=torch.float64)
    expected = torch.log(log_w.exp().mean(0))
    torch.testing.assert_close(iwae_bound(log_w), expected)
    # One sample: the ELBO itself.
    torch.testing.assert_close(iwae_bound(log_w[:1]), log_w[0])
    assert math.isclose(iwae_bound(torch.zeros(7, 1)).item(), 0.0, abs_tol=1e-6)
