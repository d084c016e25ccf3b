"""Each likelihood is a proper (normalised) distribution, computes in float32 and checks its
support."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent

import vaekit
from vaekit.likelihoods import (
    DiscretizedLogisticLikelihood,
    Likelihood,
    get_likelihood_class,
    list_likelihoods,
    register_likelihood,
)

BUILTIN = ["bernoulli", "continuous_bernoulli", "discretized_logistic", "gaussian", "laplace"]


def make(name: str, **kwargs) -> Likelihood:
    return get_likelihood_class(name)(**kwargs)


def test_registry_lists_builtins() -> None:
    assert set(BUILTIN) <= set(list_likelihoods())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names are .*bernoulli.*gaussian"):
        get_likelihood_class("poisson")


@pytest.mark.parametrize("name", BUILTIN)
def test_batch_and_event_shape(name: str, device: torch.device) -> None:
    lik = make(name).to(device)
    h = torch.randn(5, lik.params_per_element * 3, 4, 6, device=device)
    px = lik(h)
    assert isinstance(px, Independent)
    assert px.batch_shape == (5,)
    assert px.event_shape == (3, 4, 6)
    x = torch.randint(0, 256, (5, 3, 4, 6), device=device).float() / 255
    log_p = px.log_prob(x)
    assert log_p.shape == (5,)
    assert torch.isfinite(log_p).all()
    assert px.mean.shape == (5, 3, 4, 6)


@pytest.mark.parametrize("name", BUILTIN)
def test_float32_under_autocast(name: str, device: torch.device) -> None:
    lik = make(name).to(device)
    h = torch.randn(2, lik.params_per_element, 8, device=device, dtype=torch.bfloat16)
    x = torch.randint(0, 256, (2, 1, 8), device=device).float() / 255
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        px = lik(h.reshape(2, -1, 8))
        log_p = px.log_prob(x)
    assert log_p.dtype == torch.float32


def test_bernoulli_sums_to_one_over_binary_values() -> None:
    logits = torch.randn(7) * 3
    px = make("bernoulli")(logits.view(7, 1))
    p0 = px.log_prob(torch.zeros(7, 1)).exp()
    p1 = px.log_prob(torch.ones(7, 1)).exp()
    torch.testing.assert_close(p0 + p1, torch.ones(7))


def test_bernoulli_grey_targets_are_binary_cross_entropy() -> None:
    logits = torch.randn(4, 1, 3, 3)
    x = torch.rand(4, 1, 3, 3)
    log_p = make("bernoulli")(logits).log_prob(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    torch.testing.assert_close(log_p, -bce.sum(dim=(1, 2, 3)))


def _integrate(log_prob, lo: float, hi: float, n: int = 200_001) -> torch.Tensor:
    grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    return torch.trapezoid(log_prob(grid).exp(), grid, dim=-1)


@pytest.mark.parametrize("logit", [-8.0, -1.0, -1e-6, 0.0, 1e-5, 2.0, 9.0])
def test_continuous_bernoulli_integrates_to_one_and_is_stable_near_half(logit: float) -> None:
    lik = make("continuous_bernoulli")
    h = torch.full((1, 1), logit, dtype=torch.float64, requires_grad=True)
    px = lik(h)
    total = _integrate(lambda g: px.log_prob(g.view(-1, 1, 1)).view(-1), 0.0, 1.0)
    assert abs(total.item() - 1.0) < 1e-4
    # The normaliser is 0/0 at probs = 0.5: value and gradient must stay finite there.
    value = px.log_prob(torch.tensor([[0.3]], dtype=torch.float64))
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@pytest.mark.parametrize("scale", ["learned", "fixed", "per_pixel"])
def test_loc_scale_integrates_to_one(name: str, scale: str) -> None:
    lik = make(name, scale=scale, sigma=0.3).double()
    h = torch.tensor([[0.2] * lik.params_per_element], dtype=torch.float64)
    px = lik(h)
    total = _integrate(lambda g: px.log_prob(g.view(-1, 1)).view(-1), -12.0, 12.0)
    assert abs(total.item() - 1.0) < 1e-5


def test_learned_scale_is_a_saved_parameter() -> None:
    lik = make("gaussian", scale="learned", sigma=0.25)
    assert "raw_scale" in lik.state_dict()
    px = lik(torch.zeros(1, 1))
    torch.testing.assert_close(px.base_dist.scale, torch.full((1, 1), 0.25))
    assert make("gaussian", scale="fixed").state_dict() == {}


def test_per_pixel_scale_uses_the_second_half_of_the_channels() -> None:
    lik = make("gaussian", scale="per_pixel")
    assert lik.params_per_element == 2
    loc, raw = torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), -3.0)
    px = lik(torch.cat([loc, raw], dim=1))
    expected = torch.nn.functional.softplus(torch.tensor(-3.0)) + 1e-3
    torch.testing.assert_close(px.base_dist.scale, expected.expand(1, 2, 2, 2))


@pytest.mark.parametrize("scale", ["sideways", 3])
def test_invalid_scale_mode(scale) -> None:
    with pytest.raises(ValueError, match="learned, fixed, per_pixel"):
        make("gaussian", scale=scale)


@pytest.mark.parametrize("num_mixtures", [1, 3])
@pytest.mark.parametrize("spread", [0.01, 1.0, 8.0])
def test_discretized_logistic_bins_sum_to_one(num_mixtures: int, spread: float) -> None:
    lik = DiscretizedLogisticLikelihood(num_mixtures=num_mixtures)
    h = torch.randn(6, 3 * num_mixtures, 1) * spread
    px = lik(h)
    values = torch.arange(256, dtype=torch.float32) / 255  # every bin
    probs = torch.stack([px.log_prob(torch.full((6, 1, 1), v.item())).exp() for v in values])
    torch.testing.assert_close(probs.sum(0), torch.ones(6), atol=1e-4, rtol=0)


def test_discretized_logistic_edges_and_extreme_scales_are_finite() -> None:
    lik = DiscretizedLogisticLikelihood(num_mixtures=2)
    h = torch.tensor([[-50.0, 50.0, -40.0, 40.0, -20.0, 10.0]]).view(1, 6, 1)
    px = lik(h)
    for v in (0.0, 1.0, 128 / 255):
        assert torch.isfinite(px.log_prob(torch.full((1, 1, 1), v))).all()


def test_discretized_logistic_sample_is_on_the_grid() -> None:
    px = DiscretizedLogisticLikelihood(num_mixtures=3)(torch.randn(4, 9, 5))
    s = px.sample()
    assert s.shape == (4, 1, 5)
    torch.testing.assert_close(s * 255, (s * 255).round())


@pytest.mark.parametrize(
    ("name", "x", "match"),
    [
        ("bernoulli", torch.full((1, 1, 2, 2), 1.5), r"\[0, 1\]"),
        ("continuous_bernoulli", torch.full((1, 1, 2, 2), -0.1), r"\[0, 1\]"),
        ("discretized_logistic", torch.full((1, 1, 2, 2), 0.5), "256-level grid"),
    ],
)
def test_targets_outside_the_support_are_refused(name: str, x, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(name).validate_target(x)


def test_register_custom_likelihood_and_use_it_by_name() -> None:
    class Poisson(Likelihood):
        params_per_element = 1

        def distribution(self, log_rate):
            return torch.distributions.Poisson(log_rate.exp(), validate_args=False)

    register_likelihood("test_poisson", Poisson)
    assert "test_poisson" in vaekit.list_likelihoods()
    model = vaekit.MLPVAE(
        input_shape=(4,), latent_dim=2, hidden_dims=(8,), likelihood="test_poisson"
    )
    out = model(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    assert torch.isfinite(out.loss)
    assert math.isfinite(out.log_px.item())
    with pytest.raises(ValueError, match="already registered"):
        register_likelihood("gaussian", Poisson)
