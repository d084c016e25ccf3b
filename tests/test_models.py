"""Every model x likelihood x input shape: the maths, the gradients and the input checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Distribution, kl_divergence

import vaekit
from conftest import low_precision_dtypes
from vaekit.models.base import get_model_class

LIKELIHOODS = [
    ("bernoulli", {}),
    ("continuous_bernoulli", {}),
    ("gaussian", {"scale": "learned"}),
    ("gaussian", {"scale": "fixed", "sigma": 0.2}),
    ("gaussian", {"scale": "per_pixel"}),
    ("laplace", {}),
    ("discretized_logistic", {"num_mixtures": 2}),
]


def small_model(kind: str, input_shape, likelihood="bernoulli", likelihood_kwargs=None, **kw):
    if kind == "mlp":
        return vaekit.MLPVAE(
            input_shape=input_shape,
            latent_dim=3,
            hidden_dims=(16, 8),
            likelihood=likelihood,
            likelihood_kwargs=likelihood_kwargs,
            **kw,
        )
    return vaekit.ConvVAE(
        input_shape=input_shape,
        latent_dim=3,
        channels=(4, 8),
        likelihood=likelihood,
        likelihood_kwargs=likelihood_kwargs,
        **kw,
    )


def data_for(likelihood: str, shape, batch: int = 4, device="cpu") -> torch.Tensor:
    x = torch.randint(0, 256, (batch, *shape), device=device).float() / 255
    return x


GRID = [
    (kind, shape, lik, kwargs)
    for kind, shapes in [("mlp", [(1, 8, 8), (10,), (3, 5, 7)]), ("conv", [(1, 8, 8), (3, 9, 6)])]
    for shape in shapes
    for lik, kwargs in LIKELIHOODS
]


@pytest.mark.parametrize(("kind", "shape", "lik", "kwargs"), GRID)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_forward_backward_every_parameter_gets_a_gradient(
    kind, shape, lik, kwargs, num_classes, device
) -> None:
    model = small_model(kind, shape, lik, kwargs, num_classes=num_classes).to(device)
    x = data_for(lik, shape, device=device)
    y = None if num_classes is None else torch.tensor([0, 1, 2, 1], device=device)
    out = model(x, y)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.log_px.shape == (4,) and out.kl.shape == (4,)
    assert out.z.shape == (4, 3)
    assert (out.kl >= 0).all()
    torch.testing.assert_close(out.loss, (out.kl - out.log_px).mean())
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"

    assert isinstance(model.encode(x, y), Distribution)
    assert model.encode(x, y).batch_shape == (4,)
    assert model.encode(x, y).event_shape == (3,)
    px = model.decode(out.z.detach(), y)
    assert px.batch_shape == (4,) and tuple(px.event_shape) == shape
    assert model.reconstruct(x, y).shape == (4, *shape)
    sample_y = None if num_classes is None else 1
    samples = model.sample(5, y=sample_y)
    assert samples.shape == (5, *shape) and samples.device.type == device.type


@pytest.mark.parametrize("shape", [(1, 37, 23), (3, 1, 1), (2, 64, 17)])
def test_conv_decoder_returns_exactly_the_input_shape(shape) -> None:
    model = vaekit.ConvVAE(input_shape=shape, latent_dim=2, channels=(4, 8, 8))
    assert model.sample(2).shape == (2, *shape)


def test_forward_loss_is_beta_weighted_batch_mean() -> None:
    model = small_model("mlp", (6,), "gaussian")
    x = torch.rand(5, 6)
    torch.manual_seed(1)
    out = model(x, beta=0.3)
    torch.testing.assert_close(out.loss, (0.3 * out.kl - out.log_px).mean())


def test_closed_form_kl_matches_monte_carlo() -> None:
    model = small_model("mlp", (1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    qz, pz = model.encode(x), model.prior()
    z = qz.sample((200_000,))
    mc = (qz.log_prob(z) - pz.log_prob(z)).mean(0)
    torch.testing.assert_close(kl_divergence(qz, pz), mc, atol=0.02, rtol=0.01)


def test_free_bits_floor_the_penalised_kl() -> None:
    model = small_model("mlp", (6,), "gaussian")
    x = torch.rand(8, 6)
    torch.manual_seed(0)
    plain = model(x)
    torch.manual_seed(0)
    floored = model(x, free_bits=5.0)  # far above any dimension's KL at initialisation
    torch.testing.assert_close(floored.loss, (5.0 * 3 - plain.log_px).mean())
    torch.testing.assert_close(floored.kl, plain.kl)  # the reported KL stays the real one


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_elbo_is_below_importance_sampled_log_likelihood(kind) -> None:
    model = small_model(kind, (1, 8, 8))
    x = (torch.rand(16, 1, 8, 8) > 0.5).float()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([model(x).elbo for _ in range(200)]).mean(0)
    log_p = model.log_likelihood(x, num_samples=2000, generator=g)
    assert (elbo.mean() < log_p.mean()).item()
    # More samples never loosen the bound on average (here: tighten it).
    log_p_10 = model.log_likelihood(x, num_samples=10, generator=g)
    assert log_p_10.mean() <= log_p.mean() + 1e-3


def test_iwae_objective_is_tighter_than_the_elbo() -> None:
    model = small_model("mlp", (1, 8, 8))
    x = (torch.rand(32, 1, 8, 8) > 0.5).float()
    with torch.no_grad():
        elbo_loss = torch.stack([model(x).loss for _ in range(50)]).mean()
        iwae_loss = torch.stack([model(x, iwae_samples=20).loss for _ in range(50)]).mean()
    assert iwae_loss < elbo_loss


def linear_gaussian_marginal(model: vaekit.MLPVAE) -> torch.distributions.Distribution:
    """The exact p(x) of a linear Gaussian VAE (probabilistic PCA), for any weights."""
    w = model.decoder_head.weight.detach()  # (D, K)
    b = model.decoder_head.bias.detach()
    sigma = model.likelihood(torch.zeros(1, w.shape[0])).base_dist.scale[0, 0].detach()
    cov = w @ w.T + sigma**2 * torch.eye(w.shape[0])
    return torch.distributions.MultivariateNormal(b, cov)


@pytest.mark.parametrize("chunk_size", [None, 7, 20000])
def test_log_likelihood_converges_to_the_exact_value_whatever_the_chunking(chunk_size) -> None:
    model = vaekit.MLPVAE(input_shape=(3,), latent_dim=1, hidden_dims=(), likelihood="gaussian")
    x = torch.randn(4, 3)
    exact = linear_gaussian_marginal(model).log_prob(x)
    estimate = model.log_likelihood(x, num_samples=20000, chunk_size=chunk_size)
    torch.testing.assert_close(estimate, exact, atol=0.05, rtol=0)


def test_log_likelihood_with_many_samples_fits_in_memory() -> None:
    model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=8, hidden_dims=(64,))
    x = torch.rand(8, 1, 28, 28)
    log_p = model.log_likelihood(x, num_samples=5000)
    assert log_p.shape == (8,) and torch.isfinite(log_p).all()


def _fit(model, x, steps: int, lr: float = 0.02) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(x).loss.backward()
        opt.step()


def test_probabilistic_pca_matches_the_exact_marginal() -> None:
    """A linear Gaussian VAE is probabilistic PCA: log p(x) has a closed form."""
    torch.manual_seed(0)
    d, k, n = 6, 2, 2000
    w_true = torch.randn(d, k)
    b_true = torch.randn(d)
    data = torch.randn(n, k) @ w_true.T + b_true + 0.3 * torch.randn(n, d)
    model = vaekit.MLPVAE(input_shape=(d,), latent_dim=k, hidden_dims=(), likelihood="gaussian")
    _fit(model, data, steps=1500)

    w = model.decoder_head.weight.detach()  # (D, K)
    b = model.decoder_head.bias.detach()
    sigma = model.likelihood(torch.zeros(1, d)).base_dist.scale[0, 0].detach()
    x = data[:200]
    exact = linear_gaussian_marginal(model).log_prob(x)

    estimate = model.log_likelihood(
        x, num_samples=20000, generator=torch.Generator().manual_seed(0)
    )
    assert (estimate - exact).abs().mean() < 0.05
    assert (estimate - exact).abs().max() < 0.15

    # The ELBO in closed form (linear-Gaussian decoder): it never exceeds log p(x).
    qz = model.encode(x)
    mu, s = qz.base_dist.loc, qz.base_dist.scale
    resid = x - mu @ w.T - b
    expected_log_px = (
        -0.5 * d * math.log(2 * math.pi)
        - d * torch.log(sigma)
        - 0.5 * ((resid**2).sum(-1) + (s**2 @ (w**2).sum(0))) / sigma**2
    )
    elbo = expected_log_px - kl_divergence(qz, model.prior())
    assert (elbo <= exact + 1e-4).all()
    # Trained to convergence, the bound is nearly tight for PPCA (Lucas et al., 2019).
    assert (exact - elbo).mean() < 0.5


def test_sample_is_reproducible_with_a_generator() -> None:
    model = small_model("conv", (1, 8, 8))
    a = model.sample(4, generator=torch.Generator().manual_seed(7))
    b = model.sample(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sample_returns_the_likelihood_mean() -> None:
    model = small_model("mlp", (4,), "gaussian")
    g = torch.Generator().manual_seed(0)
    z = torch.randn((3, 3), generator=g)
    expected = model.decode(z).mean
    torch.testing.assert_close(
        model.sample(3, generator=torch.Generator().manual_seed(0)), expected
    )


@pytest.mark.parametrize("dtype", low_precision_dtypes())
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_autocast_forward_gives_a_finite_float32_loss(kind, dtype, device) -> None:
    model = small_model(kind, (1, 8, 8), "gaussian").to(device)
    x = torch.rand(4, 1, 8, 8, device=device)
    with torch.autocast(device_type=device.type, dtype=dtype):
        out = model(x)
    assert torch.isfinite(out.loss)
    assert out.loss.dtype == torch.float32
    out.loss.backward()


@pytest.mark.parametrize("dtype", low_precision_dtypes())
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_half_precision_model_computes_its_distributions_in_float32(kind, dtype, device) -> None:
    model = small_model(kind, (1, 8, 8), "gaussian").to(device=device, dtype=dtype)
    x = torch.rand(4, 1, 8, 8, device=device)
    out = model(x)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert model.reconstruct(x).shape == x.shape
    assert torch.isfinite(model.log_likelihood(x, num_samples=8)).all()
    assert model.sample(2).dtype == dtype


def test_float64_model_computes_in_float64() -> None:
    model = small_model("mlp", (4,), "gaussian").double()
    out = model(torch.rand(2, 4, dtype=torch.float64))
    assert out.loss.dtype == torch.float64


def test_torch_compile_forward(device) -> None:
    model = small_model("mlp", (1, 8, 8)).to(device)
    compiled = torch.compile(model)
    x = torch.rand(4, 1, 8, 8, device=device)
    eager = model(x)
    out = compiled(x)
    # Compiled kernels draw z with their own RNG, so compare the deterministic KL term.
    torch.testing.assert_close(out.kl, eager.kl, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_config_round_trips_through_json_exactly(kind) -> None:
    model = small_model(kind, (3, 8, 8), "gaussian", {"scale": "per_pixel"}, num_classes=4)
    data = json.loads(json.dumps(model.config.to_dict()))
    config = type(model.config).from_dict(data)
    assert config == model.config
    assert isinstance(config.input_shape, tuple)
    rebuilt = get_model_class(model.model_type).from_config(data)
    assert type(rebuilt) is type(model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_config_from_dict_rejects_unknown_keys_and_wrong_types() -> None:
    data = vaekit.MLPVAE(input_shape=(4,), latent_dim=2).config.to_dict()
    with pytest.raises(ValueError, match="unknown MLPVAEConfig keys"):
        vaekit.MLPVAEConfig.from_dict({**data, "depth": 3})
    with pytest.raises(ValueError, match="latent_dim: expected an integer"):
        vaekit.MLPVAEConfig.from_dict({**data, "latent_dim": "2"})
    with pytest.raises(ValueError, match="hidden_dims"):
        vaekit.MLPVAEConfig.from_dict({**data, "hidden_dims": 5})
    with pytest.raises(ValueError, match="missing required keys"):
        vaekit.MLPVAEConfig.from_dict({"latent_dim": 2})


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"latent_dim": 0}, ValueError, "latent_dim must be >= 1"),
        ({"latent_dim": 2.5}, TypeError, "latent_dim must be an integer"),
        ({"likelihood": "poisson"}, ValueError, "valid names are"),
        ({"activation": "swish2"}, ValueError, "valid names are relu"),
        ({"input_shape": (1, 28)}, ValueError, "input_shape must be"),
        ({"input_shape": (0, 28, 28)}, ValueError, "input_shape must be"),
        ({"hidden_dims": (16, -1)}, ValueError, "hidden_dims"),
        ({"norm": "instance"}, ValueError, "norm must be one of"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"likelihood": "gaussian", "likelihood_kwargs": {"scael": "fixed"}}, TypeError, "scael"),
    ],
)
def test_invalid_constructor_values(kwargs, error, match) -> None:
    args = {"input_shape": (1, 8, 8), "latent_dim": 2, **kwargs}
    with pytest.raises(error, match=match):
        vaekit.MLPVAE(**args)


def test_conv_rejects_vector_input_and_bad_channels() -> None:
    with pytest.raises(ValueError, match="use MLPVAE"):
        vaekit.ConvVAE(input_shape=(10,), latent_dim=2)
    with pytest.raises(ValueError, match="channels"):
        vaekit.ConvVAE(input_shape=(1, 8, 8), latent_dim=2, channels=())


def test_activation_by_class() -> None:
    model = vaekit.ConvVAE(
        input_shape=(1, 8, 8), latent_dim=2, channels=(4,), activation=torch.nn.GELU
    )
    assert model.config.activation == "gelu"


def test_wrong_shape_explains_how_to_fix_it() -> None:
    model = vaekit.MLPVAE(input_shape=(1, 28, 28), latent_dim=2)
    with pytest.raises(
        ValueError,
        match=r"expected x of shape \(B, 1, 28, 28\), got \(64, 784\).*input_shape=\(784,\)",
    ):
        model(torch.rand(64, 784))
    with pytest.raises(ValueError, match="x.unsqueeze"):
        model(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="3 channels instead of 1"):
        model(torch.rand(2, 3, 28, 28))


def test_non_float_nan_and_support_errors() -> None:
    model = vaekit.MLPVAE(input_shape=(4,), latent_dim=2)
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(2, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0] * 4])
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(torch.full((2, 4), 2.0))
    dl = vaekit.MLPVAE(input_shape=(4,), latent_dim=2, likelihood="discretized_logistic")
    with pytest.raises(ValueError, match="grid"):
        dl(torch.full((2, 4), 0.5))


def test_labels_are_checked() -> None:
    cond = vaekit.MLPVAE(input_shape=(4,), latent_dim=2, num_classes=3)
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="needs labels"):
        cond(x)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        cond(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        cond(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="needs labels"):
        cond.sample(2)
    plain = vaekit.MLPVAE(input_shape=(4,), latent_dim=2)
    with pytest.raises(ValueError, match="not conditional"):
        plain(x, torch.tensor([0, 1]))


def test_decode_checks_z_and_log_likelihood_checks_k() -> None:
    model = vaekit.MLPVAE(input_shape=(4,), latent_dim=2)
    with pytest.raises(ValueError, match=r"z of shape \(B, 2\)"):
        model.decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="num_samples"):
        model.log_likelihood(torch.rand(2, 4), num_samples=0)
    with pytest.raises(ValueError, match="positive integer"):
        model.sample(0)
